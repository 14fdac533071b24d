//! Enums spelled in the config as lowercase words.

/// Declares a fieldless enum with its config spelling, `Display`, `FromStr`
/// and the `(spelling, value)` table validation uses to list allowed values.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub(crate) const CHOICES: &'static [(&'static str, $name)] =
                &[$(($text, $name::$variant)),+];

            /// The spelling used in the config file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::CHOICES
                    .iter()
                    .find(|(text, _)| *text == s)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| {
                        $crate::config::names::unknown_choice(s, Self::CHOICES.iter().map(|(t, _)| *t))
                    })
            }
        }
    };
}

pub(crate) use named_enum;

pub(crate) fn unknown_choice<'a>(got: &str, allowed: impl Iterator<Item = &'a str>) -> String {
    let allowed: Vec<&str> = allowed.collect();
    format!(
        "unknown value \"{}\": expected one of {}",
        got.chars().take(60).collect::<String>(),
        allowed.join(", ")
    )
}
