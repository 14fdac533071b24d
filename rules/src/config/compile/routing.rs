//! rollback's companions: defaults, mirror and compare settings.

use crate::config::backend::BackendId;
use crate::config::ident::parse_identifier;
use crate::config::model::{
    CompareSettings, MirrorErrorPolicy, MirrorMode, MirrorSettings, OverflowPolicy, Route,
};
use crate::config::reader::{Ctx, Fields};

const MIRROR_CHOICES: &[(&str, Option<BackendId>)] = &[
    ("none", None),
    ("old", Some(BackendId::Old)),
    ("new", Some(BackendId::New)),
];

pub(super) fn defaults(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> Route {
    let f = top.child(ctx, "defaults", &["primary", "mirror", "compare"]);
    route(ctx, &f, BackendId::Old, "")
}

/// Reads primary / mirror / compare from `f`. `inherited` names where a
/// defaulted primary came from, for error messages.
pub(super) fn route(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    default_primary: BackendId,
    inherited: &str,
) -> Route {
    let primary_field = f.get("primary");
    let primary_checked = match &primary_field {
        Some(x) => ctx.choice(x, BackendId::CHOICES),
        None => Some(default_primary),
    };
    let primary = primary_checked.unwrap_or(default_primary);
    let mirror_field = f.get("mirror");
    let mirror_checked = match &mirror_field {
        Some(x) => ctx.choice(x, MIRROR_CHOICES),
        None => Some(None),
    };
    let mirror = mirror_checked.flatten();
    // Consistency checks only between values that are themselves valid, so
    // one typo yields one error.
    if let (Some(p), Some(Some(m)), Some(field)) = (primary_checked, mirror_checked, &mirror_field)
    {
        if m == p {
            let origin = if primary_field.is_none() {
                inherited
            } else {
                ""
            };
            ctx.error_at(
                field,
                format!("mirror must differ from primary (both are {m}{origin})"),
            );
        }
    }
    let compare_field = f.get("compare");
    let compare = compare_field
        .as_ref()
        .and_then(|x| ctx.boolean(x))
        .unwrap_or(false);
    if let (true, Some(None), Some(field)) = (compare, mirror_checked, &compare_field) {
        ctx.error_at(
            field,
            format!(
                "compare needs a mirror: set mirror: {} (compare checks the mirror's answer against the primary's)",
                primary.other()
            ),
        );
    }
    Route {
        primary,
        mirror,
        compare,
    }
}

pub(super) fn mirror(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> MirrorSettings {
    let f = top.child(
        ctx,
        "mirror",
        &[
            "mode",
            "queue",
            "on_overflow",
            "on_mirror_error",
            "read_your_writes_wait",
        ],
    );
    let mut m = MirrorSettings::default();
    if let Some(v) = f
        .get("mode")
        .and_then(|x| ctx.choice(&x, MirrorMode::CHOICES))
    {
        m.mode = v;
    }
    if let Some(v) = f
        .get("queue")
        .and_then(|x| ctx.integer(&x, 1, u32::MAX.into()))
    {
        m.queue = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = f
        .get("on_overflow")
        .and_then(|x| ctx.choice(&x, OverflowPolicy::CHOICES))
    {
        m.on_overflow = v;
    }
    if let Some(v) = f
        .get("on_mirror_error")
        .and_then(|x| ctx.choice(&x, MirrorErrorPolicy::CHOICES))
    {
        m.on_mirror_error = v;
    }
    if let Some(v) = f
        .get("read_your_writes_wait")
        .and_then(|x| ctx.duration(&x))
    {
        m.read_your_writes_wait = v;
    }
    m
}

pub(super) fn compare(ctx: &mut Ctx<'_>, top: &Fields<'_>) -> CompareSettings {
    let f = top.child(
        ctx,
        "compare",
        &[
            "sample",
            "ignore_columns",
            "float_tolerance",
            "log",
            "redact_literals",
            "log_values",
        ],
    );
    let mut c = CompareSettings::default();
    if let Some(v) = f.get("sample").and_then(|x| ctx.integer(&x, 0, 100)) {
        c.sample = u8::try_from(v).unwrap_or(100);
    }
    if let Some(field) = f.get("ignore_columns") {
        for item in ctx.list(&field) {
            if let Some(text) = ctx.nonempty_text(&item) {
                match parse_identifier(&text) {
                    Ok(col) => c.ignore_columns.push(col),
                    Err(e) => ctx.error_at(&item, format!("invalid column name: {e}")),
                }
            }
        }
    }
    if let Some(field) = f.get("float_tolerance") {
        match ctx.number(&field) {
            Some(x) if x.is_finite() && x >= 0.0 => c.float_tolerance = x,
            Some(_) => ctx.error_at(&field, "must be a finite number >= 0"),
            None => {}
        }
    }
    if let Some(path) = f.get("log").and_then(|x| ctx.expanded_nonempty(&x)) {
        c.log = Some(path.into());
    }
    if let Some(v) = f.get("redact_literals").and_then(|x| ctx.boolean(&x)) {
        c.redact_literals = v;
    }
    if let Some(v) = f.get("log_values").and_then(|x| ctx.boolean(&x)) {
        c.log_values = v;
    }
    c
}
