//! A real PostgreSQL for tests: Debian's `postgresql` package (installed by
//! `scripts/install-postgres.sh`), the newest version under `/usr/lib/postgresql/*/bin`.
//!
//! [`PgServer::start`] makes a fresh cluster (`initdb`) in a temporary directory and runs it on a
//! free loopback port, as `nobody` when the tests run as root (PostgreSQL refuses to run as root),
//! with trust authentication for 127.0.0.1 only, its Unix socket inside the directory and
//! `fsync=off`; it returns once the server accepts connections. [`PgServer::shared`] is one server
//! for every test of a binary that runs meanwhile, each in its own database
//! ([`PgServer::create_database`]). Dropping the last handle stops the server (immediate shutdown,
//! killed if it does not stop in time) and removes its directory.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, Instant},
};

use tokio_postgres::{types::ToSql, NoTls, Row};

/// The uid and gid PostgreSQL runs as when the tests run as root: `nobody`.
const NOBODY: u32 = 65534;

/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "postgres";

/// How long the server has to start (or to stop before it is killed).
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL server in a temporary directory, stopped when dropped.
pub struct PgServer {
    /// The postmaster (`None` while restarting).
    child: Mutex<Option<Child>>,
    port: u16,
    bin: PathBuf,
    /// More settings (`-c` arguments).
    args: Vec<String>,
    /// The data directory (`data/`), the socket directory (`sock/`) and the server's log.
    dir: tempfile::TempDir,
}

impl PgServer {
    /// One server for every test of this binary that runs meanwhile: started by the first, stopped
    /// when the last drops its handle. A test that restarts or stops the server starts its own.
    pub fn shared() -> Arc<PgServer> {
        static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(PgServer::start());
        *shared = Arc::downgrade(&server);
        server
    }

    /// Makes a fresh cluster and starts it; returns once it accepts connections. Panics (with the
    /// server's log) when it cannot.
    pub fn start() -> PgServer {
        Self::start_with(false)
    }

    /// Like [`PgServer::start`], with TLS on (plain connections are still accepted): its
    /// certificate, for 127.0.0.1, is self-signed; [`PgServer::ca_file`] is it, in PEM.
    pub fn start_tls() -> PgServer {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&sock, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let log = dir.path().join("initdb.log");
        let status = command(&bin.join("initdb"), dir.path())
            .args(["-D", data.to_str().unwrap()])
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
            ])
            .arg("--locale=C")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("initdb.err")).unwrap())
            .status()
            .expect("run initdb");
        assert!(
            status.success(),
            "initdb failed ({status}):\n{}{}",
            read(&log),
            read(&dir.path().join("initdb.err"))
        );
        // Trust, and only on loopback (and the socket in the directory, which only nobody reaches).
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let mut args = Vec::new();
        if tls {
            let certified =
                rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert, certified.cert.pem()).unwrap();
            std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            // PostgreSQL wants its key readable by itself alone.
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if is_root() {
                std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY)).unwrap();
            }
            args = vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", cert.display()),
                format!("ssl_key_file={}", key.display()),
            ];
        }
        let mut server = PgServer {
            child: Mutex::new(None),
            port: super::free_port(),
            bin,
            args,
            dir,
        };
        // A port taken between choosing it and binding it: another one.
        for attempt in 0.. {
            match server.spawn() {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("could not bind") => {
                    server.port = super::free_port();
                }
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        server
    }

    /// Starts the postmaster on the directory and port; waits until it accepts connections.
    /// `Err(log)` when it exits first or does not answer in time.
    fn spawn(&self) -> Result<(), String> {
        let log_path = self.dir.path().join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = command(&self.bin.join("postgres"), self.dir.path())
            .args(["-D", self.data().to_str().unwrap()])
            .args(["-p", &self.port.to_string()])
            .args(["-k", self.dir.path().join("sock").to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "shared_buffers=32MB"])
            // Not /dev/shm, which containers keep small.
            .args(["-c", "dynamic_shared_memory_type=mmap"])
            .args(self.args.iter().flat_map(|a| ["-c", a.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start postgres");
        *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", SUPERUSER, "-d", "postgres", "-t", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            let exited = self
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                return Err(format!("postgres exited ({status}):\n{}", read(&log_path)));
            }
            if Instant::now() > deadline {
                self.stop("QUIT");
                return Err(format!(
                    "postgres did not accept connections within {START_TIMEOUT:?}:\n{}",
                    read(&log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the postmaster with `signal` (`INT`: fast shutdown; `QUIT`: immediate), waiting at
    /// most [`STOP_TIMEOUT`] before killing it.
    fn stop(&self, signal: &str) {
        let Some(mut child) = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Its whole group: the backends too.
        super::process::kill_group(&mut child);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The certificate of a server started with [`PgServer::start_tls`] (its own CA), in PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of database `postgres` as the superuser, without a password (trust authentication).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// A URL of database `db` as the superuser, without a password.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL of database `db` with `password` (which trust authentication never asks for: it
    /// connects all the same, to check that the password is shown nowhere).
    pub fn url_with_password(&self, db: &str, password: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{password}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Creates database `name` (a fresh one per test keeps tests apart on a shared server);
    /// returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        self.execute("postgres", &format!("CREATE DATABASE \"{name}\""), &[])
            .await;
        self.url_of(name)
    }

    /// Stops the server (fast shutdown: sessions are ended) and starts it again on the same port
    /// and data; returns once it accepts connections.
    pub fn restart(&self) {
        self.stop("INT");
        if let Err(log) = self.spawn() {
            panic!("PostgreSQL did not restart:\n{log}");
        }
    }

    /// Stops the server (fast shutdown) until [`PgServer::start_again`]: an outage.
    pub fn stop_now(&self) {
        self.stop("INT");
    }

    /// Starts a stopped server again on the same port and data; returns once it accepts
    /// connections.
    pub fn start_again(&self) {
        if let Err(log) = self.spawn() {
            panic!("PostgreSQL did not start again:\n{log}");
        }
    }

    /// Ends every session whose `application_name` starts with `prefix` (`pg_terminate_backend`);
    /// returns how many.
    pub async fn terminate(&self, prefix: &str) -> u64 {
        let rows = self
            .query(
                "postgres",
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE starts_with(application_name, $1) AND pid <> pg_backend_pid()",
                &[&prefix],
            )
            .await;
        rows[0].get::<_, i64>(0) as u64
    }

    /// Runs `sql` on database `db`; returns its rows. Panics on an error.
    pub async fn query(&self, db: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Row> {
        let client = self.client(db).await;
        client
            .query(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {db}: {e:?}"))
    }

    /// Runs `sql` on database `db`; returns the rows it changed. Panics on an error.
    pub async fn execute(&self, db: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> u64 {
        let client = self.client(db).await;
        client
            .execute(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {db}: {e:?}"))
    }

    /// A connection to database `db` as the superuser, closed when dropped.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url_of(db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("postgres.log"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop("QUIT");
    }
}

/// `program` as nobody when the tests run as root, in `dir`.
fn command(program: &Path, dir: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env_remove("PGDATA")
        .env_remove("PGHOST")
        .env_remove("PGPORT");
    cmd
}

/// The newest PostgreSQL's `bin` directory under `/usr/lib/postgresql`.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL under {}: run `make tools` (scripts/install-postgres.sh)",
            root.display()
        ),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether this process runs as root (the owner of its /proc entry).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
