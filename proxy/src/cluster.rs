//! Throwaway local Postgres clusters, for `pgshift demo` and the end-to-end tests.
//!
//! A [`LocalCluster`] is a private `initdb` + `pg_ctl start` in a fresh directory
//! under `/tmp`, listening on a free loopback port and on a unix socket inside
//! that directory, tuned for speed rather than durability (fsync off). When the
//! process runs as root, every Postgres program runs as an unprivileged account
//! (`nobody`, or `$PGSHIFT_PG_USER`), because initdb and postgres refuse to run
//! as root.
//!
//! Teardown happens twice over: [`LocalCluster::stop`] / `Drop` do it in an
//! orderly way, and a small *reaper* shell process started with every cluster
//! does it when this process goes away for any reason (a panic, `exit`, SIGKILL,
//! or a `static` that is never dropped). The reaper waits for end-of-file on a
//! pipe whose only write end lives in this process; the kernel closes it when the
//! process dies, and the reaper then runs `pg_ctl stop -m immediate` and removes
//! the directory.
//!
//! Everything here is synchronous `std::process` code: it runs at startup and
//! teardown only.

use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Environment variable naming the directory that holds `initdb`, `pg_ctl` and
/// `postgres`; checked before `PATH` and `/usr/lib/postgresql/*/bin`.
pub const PG_BIN_ENV: &str = "PGSHIFT_PG_BIN";

/// Environment variable naming the account Postgres runs as when this process
/// is root (default `nobody`).
pub const PG_USER_ENV: &str = "PGSHIFT_PG_USER";

/// A login role that every cluster lets in over TCP without a password.
pub const TRUST_USER: &str = "trust_user";

/// A login role that every cluster authenticates with a cleartext password
/// (pg_hba method `password`); its password is the app user's.
pub const PLAIN_USER: &str = "plain_user";

/// The app password [`ClusterPair::start_pair`] gives both clusters.
pub const PAIR_APP_PASSWORD: &str = "app-secret";

const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
const START_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 40;

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
///
/// Looks at `$PGSHIFT_PG_BIN` (an error if set but wrong), then the directory of
/// the `initdb` found on `PATH` (the directory it really lives in when it is a
/// symlink, as initdb and pg_ctl look for `postgres` next to their resolved
/// path), then the highest version under `/usr/lib/postgresql/*/bin` (Debian's
/// layout, which is not on `PATH`).
pub fn find_pg_bin_dir() -> Result<PathBuf> {
    find_pg_bin_dir_in(
        std::env::var_os(PG_BIN_ENV),
        std::env::var_os("PATH"),
        Path::new(DEBIAN_PG_ROOT),
    )
}

fn find_pg_bin_dir_in(
    env_dir: Option<OsString>,
    path: Option<OsString>,
    debian_root: &Path,
) -> Result<PathBuf> {
    if let Some(dir) = env_dir.filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing = missing_server_programs(&dir);
        if missing.is_empty() {
            return Ok(dir);
        }
        bail!(
            "{PG_BIN_ENV}={} does not contain the PostgreSQL server programs (missing: {})",
            dir.display(),
            missing.join(", ")
        );
    }
    let mut looked = vec![format!("${PG_BIN_ENV} (not set)")];

    match path.as_deref().and_then(|p| which_in("initdb", p)) {
        Some(initdb) => {
            let mut candidates = Vec::new();
            if let Some(real_dir) = std::fs::canonicalize(&initdb)
                .ok()
                .and_then(|real| real.parent().map(Path::to_path_buf))
            {
                candidates.push(real_dir);
            }
            if let Some(dir) = initdb.parent() {
                candidates.push(dir.to_path_buf());
            }
            if let Some(dir) = candidates
                .into_iter()
                .find(|d| missing_server_programs(d).is_empty())
            {
                return Ok(dir);
            }
            looked.push(format!(
                "PATH (found {}, but pg_ctl and postgres are not next to it)",
                initdb.display()
            ));
        }
        None => looked.push("PATH (no initdb)".to_string()),
    }

    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(debian_root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| (version_key(&entry.file_name()), entry.path().join("bin")))
        .filter(|(_, bin)| missing_server_programs(bin).is_empty())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    looked.push(format!(
        "{}/*/bin (no directory with initdb, pg_ctl and postgres)",
        debian_root.display()
    ));

    bail!(
        "could not find the PostgreSQL server programs (initdb, pg_ctl, postgres); looked in: {}. \
         Install them (e.g. `apt-get install postgresql`) or set {PG_BIN_ENV} to the directory \
         that holds initdb",
        looked.join("; ")
    )
}

fn missing_server_programs(dir: &Path) -> Vec<&'static str> {
    SERVER_PROGRAMS
        .iter()
        .copied()
        .filter(|p| !is_executable(&dir.join(p)))
        .collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn which_in(program: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// "15" -> [15], "9.6" -> [9, 6]; anything unparsable sorts first.
fn version_key(name: &OsStr) -> Vec<u64> {
    name.to_str()
        .and_then(|s| s.split('.').map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// How to build one throwaway cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Short label used in the directory name, errors and logs ("old", "new").
    pub name: String,
    /// `scram-sha-256` or `md5`: how passwords are stored, and the pg_hba
    /// method for every TCP login except the superuser, trust_user and plain_user.
    pub password_encryption: String,
    /// Bootstrap superuser; trusted on the unix socket and on loopback TCP.
    pub superuser: String,
    pub app_user: String,
    pub app_password: String,
    /// Database created owned by `app_user`.
    pub database: String,
    /// Extra `postgresql.conf` lines, appended after pgshift's own (so they win).
    pub extra_conf: Vec<String>,
    /// Where initdb, pg_ctl and postgres live; `None` means [`find_pg_bin_dir`].
    pub bin_dir: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            name: "pgshift".to_string(),
            password_encryption: "scram-sha-256".to_string(),
            superuser: "postgres".to_string(),
            app_user: "app".to_string(),
            app_password: PAIR_APP_PASSWORD.to_string(),
            database: "app".to_string(),
            extra_conf: Vec::new(),
            bin_dir: None,
        }
    }
}

/// The account Postgres programs run as when this process is root.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn unprivileged_account() -> Result<Option<RunAs>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::env::var(PG_USER_ENV).unwrap_or_else(|_| "nobody".to_string());
    let account = lookup_account(&name).with_context(|| {
        format!(
            "running as root, so Postgres must run as an unprivileged account, \
             but account '{name}' is unusable (set {PG_USER_ENV} to another one)"
        )
    })?;
    Ok(Some(account))
}

fn lookup_account(name: &str) -> Result<RunAs> {
    let c_name = CString::new(name).context("account name contains a NUL byte")?;
    let mut buf: Vec<libc::c_char> = vec![0; 16 * 1024];
    loop {
        // SAFETY: passwd is plain old data; getpwnam_r fills it with pointers
        // into `buf`, which outlives every use (only the numeric ids are read).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1024 * 1024 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            bail!(
                "getpwnam_r({name}): {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if found.is_null() {
            bail!("no such account");
        }
        if pwd.pw_uid == 0 {
            bail!("it is root");
        }
        return Ok(RunAs {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

/// The reaper: a shell that, once stdin hits end-of-file, stops the server
/// immediately and removes the cluster directory.
struct Reaper {
    child: Child,
    /// The write end of the reaper's stdin: held only by this process (Rust
    /// creates pipes with O_CLOEXEC, so no program we start inherits it).
    stdin: Option<ChildStdin>,
}

const REAPER_SCRIPT: &str = r#"trap '' HUP INT
while read -r _; do :; done
"$1" -D "$2" stop -m immediate -w -t 30 >/dev/null 2>&1
rm -rf "$3"
"#;

/// One throwaway Postgres cluster. Dropping it stops the server and removes
/// its directory.
pub struct LocalCluster {
    name: String,
    port: u16,
    /// Top directory: unix socket, server log and `data/`.
    dir: PathBuf,
    bin: PathBuf,
    psql: PathBuf,
    run_as: Option<RunAs>,
    superuser: String,
    app_user: String,
    app_password: String,
    database: String,
    password_encryption: String,
    reaper: Option<Reaper>,
    running: bool,
    startup: Duration,
    major_version: u32,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("bin", &self.bin)
            .field("password_encryption", &self.password_encryption)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// initdb, configure, start, and create the app role and database plus
    /// [`TRUST_USER`] and [`PLAIN_USER`] (both members of the app role).
    /// Takes about a second on an idle machine, most of it initdb.
    pub fn start(opts: ClusterOptions) -> Result<LocalCluster> {
        let started = Instant::now();
        validate(&opts)?;
        let bin = match &opts.bin_dir {
            Some(dir) => dir.clone(),
            None => find_pg_bin_dir()?,
        };
        let missing = missing_server_programs(&bin);
        if !missing.is_empty() {
            bail!("{} does not contain {}", bin.display(), missing.join(", "));
        }
        let psql = find_psql(&bin)?;
        let run_as = unprivileged_account()?;
        let dir = make_cluster_dir(&opts.name, run_as)?;

        let mut cluster = LocalCluster {
            name: opts.name.clone(),
            port: 0,
            dir,
            bin,
            psql,
            run_as,
            superuser: opts.superuser.clone(),
            app_user: opts.app_user.clone(),
            app_password: opts.app_password.clone(),
            database: opts.database.clone(),
            password_encryption: opts.password_encryption.clone(),
            reaper: None,
            running: false,
            startup: Duration::ZERO,
            major_version: 0,
        };
        // From here on, dropping `cluster` cleans up whatever was made.
        cluster
            .spawn_reaper()
            .and_then(|()| cluster.init_and_start(&opts))
            .with_context(|| {
                format!(
                    "starting throwaway Postgres cluster '{}' ({}) in {}",
                    cluster.name,
                    cluster.bin.display(),
                    cluster.dir.display()
                )
            })?;
        cluster.startup = started.elapsed();
        tracing::debug!(
            cluster = %cluster.name,
            port = cluster.port,
            dir = %cluster.dir.display(),
            elapsed_ms = cluster.startup.as_millis() as u64,
            "started throwaway Postgres cluster"
        );
        Ok(cluster)
    }

    fn spawn_reaper(&mut self) -> Result<()> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(REAPER_SCRIPT)
            .arg("pgshift-cluster-reaper")
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(&self.dir)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C to the foreground group must not
            // kill it before it has cleaned up.
            .process_group(0);
        clean_env(&mut cmd);
        cloexec_inherited_fds(&mut cmd);
        if let Some(account) = self.run_as {
            // The whole tree belongs to this account, so it can also remove it.
            cmd.uid(account.uid).gid(account.gid);
        }
        let mut child = cmd.spawn().context("could not start the cleanup process")?;
        let stdin = child.stdin.take();
        self.reaper = Some(Reaper { child, stdin });
        Ok(())
    }

    fn init_and_start(&mut self, opts: &ClusterOptions) -> Result<()> {
        let data = self.data_dir();
        let mut initdb = self.pg_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .arg("-U")
            .arg(&opts.superuser)
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]);
        run(&mut initdb, "initdb")?;
        self.major_version = std::fs::read_to_string(data.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);

        let original_conf = std::fs::read_to_string(data.join("postgresql.conf"))
            .context("reading postgresql.conf")?;
        // Rewriting files initdb made keeps their owner (the unprivileged account).
        std::fs::write(data.join("pg_hba.conf"), hba_conf(opts)).context("writing pg_hba.conf")?;

        let mut attempt = 1;
        loop {
            self.port = free_loopback_port()?;
            let conf = format!(
                "{original_conf}\n{}",
                extra_postgresql_conf(opts, self.port, &self.dir)
            );
            std::fs::write(data.join("postgresql.conf"), conf)
                .context("writing postgresql.conf")?;

            let log_before = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
            let mut pg_ctl = self.pg_command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "60", "start"]);
            // Set before trying, so that a server that came up after pg_ctl gave
            // up is still stopped.
            self.running = true;
            let Err(err) = run(&mut pg_ctl, "pg_ctl start") else {
                break;
            };
            self.stop();
            // Another process took the port between our probe and postgres's bind?
            let port_taken = std::fs::read(self.log_path()).is_ok_and(|log| {
                let this_attempt =
                    String::from_utf8_lossy(log.get(log_before as usize..).unwrap_or_default());
                this_attempt.contains("could not bind")
                    || this_attempt.contains("Address already in use")
            });
            if !port_taken || attempt == START_ATTEMPTS {
                bail!(
                    "{err:#}\n--- last lines of the server log ---\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            attempt += 1;
        }

        // trust_user and plain_user are members of the app role, so they can
        // use whatever the app user creates.
        let password = quote_literal(&opts.app_password);
        let app = quote_ident(&opts.app_user);
        let mut setup = format!("CREATE ROLE {app} LOGIN PASSWORD {password};\n");
        for role in [TRUST_USER, PLAIN_USER] {
            let _ = writeln!(
                setup,
                "CREATE ROLE {} LOGIN PASSWORD {password} IN ROLE {app};",
                quote_ident(role),
            );
        }
        setup.push_str(&self.create_database_sql(&opts.database));
        self.psql("postgres", &setup)
            .context("creating the app roles and database")?;
        Ok(())
    }

    /// Creates a database owned by the app user, with all privileges on it
    /// granted to [`TRUST_USER`] and [`PLAIN_USER`] as well.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &self.create_database_sql(name))
            .map(drop)
    }

    fn create_database_sql(&self, name: &str) -> String {
        format!(
            "CREATE DATABASE {db} OWNER {owner};\n\
             GRANT ALL ON DATABASE {db} TO {trust}, {plain};\n",
            db = quote_ident(name),
            owner = quote_ident(&self.app_user),
            trust = quote_ident(TRUST_USER),
            plain = quote_ident(PLAIN_USER),
        )
    }

    /// The server's major version (e.g. 15), from `PG_VERSION`.
    pub fn major_version(&self) -> u32 {
        self.major_version
    }

    /// A connection URL for the cluster's app database over loopback TCP.
    pub fn url(&self, user: &str, password: &str) -> String {
        self.url_db(user, password, &self.database)
    }

    /// A connection URL for database `db` over loopback TCP; an empty password
    /// is left out.
    pub fn url_db(&self, user: &str, password: &str, db: &str) -> String {
        let mut userinfo = percent_encode(user);
        if !password.is_empty() {
            userinfo.push(':');
            userinfo.push_str(&percent_encode(password));
        }
        format!(
            "postgres://{userinfo}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// [`Self::url_db`] with the app user and password.
    pub fn app_url(&self, db: &str) -> String {
        self.url_db(&self.app_user, &self.app_password, db)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn app_user(&self) -> &str {
        &self.app_user
    }

    pub fn app_password(&self) -> &str {
        &self.app_password
    }

    /// The app database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// `scram-sha-256` or `md5`.
    pub fn password_encryption(&self) -> &str {
        &self.password_encryption
    }

    /// The directory with initdb, pg_ctl and postgres.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory holding the unix socket (also the server log and `data/`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// How long [`Self::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The postmaster's process id, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pid_file.lines().next()?.trim().parse().ok()
    }

    /// The cleanup process's id (see the module docs).
    pub fn reaper_pid(&self) -> Option<u32> {
        self.reaper.as_ref().map(|r| r.child.id())
    }

    /// Runs `sql` (any number of statements and psql meta-commands) with
    /// `psql -X -A -t -q -v ON_ERROR_STOP=1` as the superuser over the unix
    /// socket, in database `db`, and returns its standard output: one line per
    /// row, columns separated by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(&self.psql);
        clean_env(&mut cmd);
        // As the invoking user (psql does not mind root), so that `\i` and
        // `\copy` can read the caller's files.
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.superuser)
            .arg("-d")
            .arg(db)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not run {}", self.psql.display()))?;
        let mut stdin = child.stdin.take().context("psql stdin")?;
        let script = sql.as_bytes().to_vec();
        // Written from another thread so a large script and a large result
        // cannot deadlock on full pipes.
        let writer = std::thread::spawn(move || stdin.write_all(&script));
        let output = child.wait_with_output().context("waiting for psql")?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("psql stdin writer panicked"))?;
        let what = format!("psql on cluster '{}', database '{db}'", self.name);
        let stdout = check_output(output, &what)?;
        written.with_context(|| format!("writing the script to {what}"))?;
        Ok(stdout)
    }

    /// Stops the server: `pg_ctl stop -m fast`, then `-m immediate` if that
    /// fails. Does nothing when it is not running; never panics.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let mut last = None;
        for mode in ["fast", "immediate"] {
            let mut pg_ctl = self.pg_command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", mode, "-w", "-t", "30", "stop"]);
            match run(&mut pg_ctl, "pg_ctl stop") {
                Ok(_) => return,
                Err(err) => last = Some(err),
            }
        }
        if let Some(err) = last {
            // "no server running" after a failed start is expected; anything
            // else is left to the reaper.
            tracing::debug!(cluster = %self.name, error = %format!("{err:#}"), "pg_ctl stop failed");
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(self.log_path()) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(err) => format!("(could not read the server log: {err})"),
        }
    }

    /// A command for a Postgres server program, run as the unprivileged account
    /// when we are root, from the cluster directory, with a clean environment.
    fn pg_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        clean_env(&mut cmd);
        cloexec_inherited_fds(&mut cmd);
        cmd.current_dir(&self.dir).env("HOME", &self.dir);
        if let Some(account) = self.run_as {
            cmd.uid(account.uid).gid(account.gid);
        }
        cmd
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut reaper) = self.reaper.take() {
            // End-of-file for the reaper: it removes the directory.
            drop(reaper.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                match reaper.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        if self.dir.exists() {
            if let Err(err) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), %err, "could not remove cluster directory");
            }
        }
    }
}

/// The OLD and NEW clusters of a migration.
#[derive(Debug)]
pub struct ClusterPair {
    pub old: LocalCluster,
    pub new: LocalCluster,
}

impl ClusterPair {
    /// Starts OLD (passwords stored as SCRAM-SHA-256) and NEW (MD5) in
    /// parallel, both with app user `app`, password [`PAIR_APP_PASSWORD`] and
    /// database `app`. Between them a proxy meets both backend auth methods.
    pub fn start_pair() -> Result<ClusterPair> {
        let base = ClusterOptions {
            app_password: PAIR_APP_PASSWORD.to_string(),
            ..ClusterOptions::default()
        };
        Self::start_with(
            ClusterOptions {
                name: "old".to_string(),
                password_encryption: "scram-sha-256".to_string(),
                ..base.clone()
            },
            ClusterOptions {
                name: "new".to_string(),
                password_encryption: "md5".to_string(),
                ..base
            },
        )
    }

    /// Starts two clusters in parallel.
    pub fn start_with(old: ClusterOptions, new: ClusterOptions) -> Result<ClusterPair> {
        let (old, new) = std::thread::scope(|s| {
            let old = s.spawn(move || LocalCluster::start(old));
            let new = s.spawn(move || LocalCluster::start(new));
            let join = |h: std::thread::ScopedJoinHandle<'_, Result<LocalCluster>>| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("cluster start-up thread panicked")))
            };
            (join(old), join(new))
        });
        // A failure on one side drops (and so cleans up) the other.
        let old = old.context("starting the OLD cluster")?;
        let new = new.context("starting the NEW cluster")?;
        Ok(ClusterPair { old, new })
    }
}

fn validate(opts: &ClusterOptions) -> Result<()> {
    if !matches!(opts.password_encryption.as_str(), "scram-sha-256" | "md5") {
        bail!(
            "password_encryption must be scram-sha-256 or md5, not {:?}",
            opts.password_encryption
        );
    }
    for (what, value) in [
        ("superuser", &opts.superuser),
        ("app_user", &opts.app_user),
        ("database", &opts.database),
    ] {
        if value.is_empty() || value.contains(['\0', '\n', '\r', ' ', '\t', '"']) {
            bail!("{what} {value:?} is not usable as a Postgres name here");
        }
    }
    if opts.app_password.contains('\0') {
        bail!("app_password contains a NUL byte");
    }
    Ok(())
}

fn find_psql(bin: &Path) -> Result<PathBuf> {
    let next_to_server = bin.join("psql");
    if is_executable(&next_to_server) {
        return Ok(next_to_server);
    }
    std::env::var_os("PATH")
        .and_then(|path| which_in("psql", &path))
        .with_context(|| {
            format!(
                "psql is neither in {} nor on PATH (install the PostgreSQL client, e.g. \
                 `apt-get install postgresql-client`)",
                bin.display()
            )
        })
}

/// Makes `/tmp/pgshift-<name>-XXXXXX`, reachable by and (when we are root)
/// owned by the account Postgres runs as.
fn make_cluster_dir(name: &str, run_as: Option<RunAs>) -> Result<PathBuf> {
    let label: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(20)
        .collect();
    let parent = Path::new("/tmp");
    let dir = tempfile::Builder::new()
        .prefix(&format!("pgshift-{label}-"))
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory under {}", parent.display()))?
        .keep();
    let prepare = || -> Result<()> {
        // 0755: the unix socket must be reachable by the invoking user as well.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        if let Some(account) = run_as {
            std::os::unix::fs::chown(&dir, Some(account.uid), Some(account.gid))
                .with_context(|| format!("chown {}", dir.display()))?;
            for ancestor in dir.ancestors().skip(1) {
                let mode = std::fs::metadata(ancestor)?.permissions().mode();
                if mode & 0o001 == 0 {
                    bail!(
                        "{} is not traversable by other users (mode {:o}), so the \
                         unprivileged Postgres account cannot reach {}",
                        ancestor.display(),
                        mode & 0o7777,
                        dir.display()
                    );
                }
            }
        }
        Ok(())
    };
    if let Err(err) = prepare() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(err);
    }
    Ok(dir)
}

fn free_loopback_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn hba_conf(opts: &ClusterOptions) -> String {
    let mut hba = String::from(
        "# written by pgshift for a throwaway cluster\n\
         # TYPE  DATABASE  USER  ADDRESS  METHOD\n\
         local all all trust\n",
    );
    for addr in ["127.0.0.1/32", "::1/128"] {
        let _ = writeln!(hba, "host all {} {addr} trust", opts.superuser);
        let _ = writeln!(hba, "host all {TRUST_USER} {addr} trust");
        let _ = writeln!(hba, "host all {PLAIN_USER} {addr} password");
        let _ = writeln!(hba, "host all all {addr} {}", opts.password_encryption);
    }
    hba
}

fn extra_postgresql_conf(opts: &ClusterOptions, port: u16, socket_dir: &Path) -> String {
    let mut conf = format!(
        "# added by pgshift for a throwaway cluster\n\
         port = {port}\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = {}\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         max_connections = 300\n\
         max_prepared_transactions = 20\n\
         shared_buffers = 128MB\n\
         password_encryption = {}\n\
         logging_collector = off\n\
         log_destination = 'stderr'\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n",
        conf_quote(&socket_dir.to_string_lossy()),
        conf_quote(&opts.password_encryption),
    );
    for line in &opts.extra_conf {
        conf.push_str(line);
        conf.push('\n');
    }
    conf
}

fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    let escaped = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", escaped.replace('\\', "\\\\"))
    } else {
        format!("'{escaped}'")
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Leaves out every `PG*` variable (PGHOST, PGPASSWORD, PGDATA, ...), so the
/// caller's environment cannot redirect or break the programs we run, and
/// makes messages predictable.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C");
}

/// Marks every descriptor above stderr close-on-exec in the child, so that
/// the long-lived processes (the postmaster, the reaper) never hold on to a
/// pipe this process inherited without O_CLOEXEC (a make jobserver, a CI
/// runner's or a shell's pipe), which would keep whoever reads it waiting.
/// Rust's own descriptors are all close-on-exec already.
fn cloexec_inherited_fds(cmd: &mut Command) {
    // Worked out before fork: between fork and exec only syscalls are allowed.
    let limit = open_fd_limit();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe calls (close_range, fcntl); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) == 0
            {
                return Ok(());
            }
            // Kernels before 5.11 (or other systems): one descriptor at a time.
            for fd in 3..limit {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

fn open_fd_limit() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    soft.min(65_536) as libc::c_int
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let output = cmd.stdin(Stdio::null()).output().with_context(|| {
        format!(
            "could not run {what} ({})",
            cmd.get_program().to_string_lossy()
        )
    })?;
    check_output(output, what)
}

fn check_output(output: Output, what: &str) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut message = format!("{what} failed ({})", output.status);
    for text in [stderr.trim(), stdout.trim()] {
        if !text.is_empty() {
            message.push('\n');
            message.push_str(text);
        }
    }
    Err(anyhow!(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_programs(dir: &Path, programs: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for program in programs {
            let path = dir.join(program);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn finds_the_server_programs_on_this_machine() {
        let dir = find_pg_bin_dir().expect("Postgres server programs on this machine");
        for program in SERVER_PROGRAMS {
            assert!(
                is_executable(&dir.join(program)),
                "{program} missing in {}",
                dir.display()
            );
        }
    }

    #[test]
    fn env_var_wins_and_is_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join("good");
        fake_programs(&good, &SERVER_PROGRAMS);
        let empty = tmp.path().join("nothing");
        let found = find_pg_bin_dir_in(Some(good.clone().into()), None, &empty).unwrap();
        assert_eq!(found, good);

        let partial = tmp.path().join("partial");
        fake_programs(&partial, &["initdb"]);
        let err = find_pg_bin_dir_in(Some(partial.into()), None, &empty).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(PG_BIN_ENV) && text.contains("pg_ctl, postgres"),
            "{text}"
        );
    }

    #[test]
    fn path_follows_symlinks_to_the_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("lib/pg/17/bin");
        fake_programs(&real, &SERVER_PROGRAMS);
        let on_path = tmp.path().join("local/bin");
        std::fs::create_dir_all(&on_path).unwrap();
        std::os::unix::fs::symlink(real.join("initdb"), on_path.join("initdb")).unwrap();
        let path = std::env::join_paths([tmp.path().join("missing"), on_path]).unwrap();
        let found = find_pg_bin_dir_in(None, Some(path), &tmp.path().join("none")).unwrap();
        assert_eq!(found, std::fs::canonicalize(&real).unwrap());
    }

    #[test]
    fn highest_debian_version_is_chosen() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("usr/lib/postgresql");
        for version in ["9.6", "13", "16", "17"] {
            fake_programs(&root.join(version).join("bin"), &SERVER_PROGRAMS);
        }
        // 18 is incomplete, so it does not count.
        fake_programs(&root.join("18/bin"), &["initdb", "pg_ctl"]);
        let found = find_pg_bin_dir_in(None, Some(OsString::from("/nonexistent")), &root).unwrap();
        assert_eq!(found, root.join("17/bin"));
    }

    #[test]
    fn error_says_where_it_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let err = find_pg_bin_dir_in(None, Some(OsString::from("/nonexistent")), tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("PATH (no initdb)"), "{err}");
        assert!(err.contains(PG_BIN_ENV), "{err}");
        assert!(err.contains("apt-get install postgresql"), "{err}");
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    }

    #[test]
    fn hba_matches_password_encryption() {
        let opts = ClusterOptions {
            password_encryption: "md5".to_string(),
            ..ClusterOptions::default()
        };
        let hba = hba_conf(&opts);
        assert!(hba.contains("host all all 127.0.0.1/32 md5\n"), "{hba}");
        assert!(hba.contains("host all all ::1/128 md5\n"), "{hba}");
        assert!(
            hba.contains("host all plain_user 127.0.0.1/32 password\n"),
            "{hba}"
        );
        assert!(hba.contains("host all postgres ::1/128 trust\n"), "{hba}");
        // The catch-all comes after the specific lines (first match wins).
        assert!(hba.find("trust_user 127.0.0.1").unwrap() < hba.find("all all 127.0.0.1").unwrap());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
        assert_eq!(conf_quote("/tmp/x'y"), "'/tmp/x''y'");
        assert_eq!(percent_encode("app-secret"), "app-secret");
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert!(validate(&ClusterOptions {
            password_encryption: "password".to_string(),
            ..ClusterOptions::default()
        })
        .is_err());
    }
}
