//! The outbox writer: one thread owns the only write connection to `outbox.db` and commits
//! appends in groups. Producers wait on a oneshot that is answered only after the group's
//! `COMMIT` returned, and with `synchronous=FULL` that means the WAL was fsynced: a producer
//! is never told "done" before its event survives a power cut.
//!
//! Group commit is what makes this fast: one fsync covers every append that queued while the
//! previous one ran, so throughput grows with the number of concurrent producers.

use super::append::{Appender, GroupClock};
use super::checkpointer::{self, Checkpointer};
use super::keys::UnfiledKeys;
use super::prune::{PruneSettings, Pruner};
use super::stats::{self, OutboxStats};
use super::{AppendBody, AppendRequest, Appended, OutboxError, RetentionClass};
use crate::storage::{self, Durability};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Tunables taken from the validated config.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub group_commit_max: usize,
    pub telemetry_quota_rows: u64,
    pub low_free_mb: u64,
    /// Sequence numbers start above this. Set when a damaged outbox was moved aside, so events
    /// in the fresh one never reuse a `seq` of the old one (central deduplicates per agent).
    pub seq_floor: u64,
    /// WAL frames (pages) after which the checkpointer thread folds the WAL into the database
    /// as soon as the writer is idle (ADR 0013, 0014); under load only past
    /// `BURST_FACTOR` times this. [`DEFAULT_CHECKPOINT_PAGES`] unless a test wants checkpoints
    /// often; 0 leaves SQLite's own auto-checkpoint inside the commit (the behaviour before
    /// ADR 0011, kept so the benchmark can compare both in one build).
    pub checkpoint_pages: u32,
    /// How long history and stored answers are kept, and where central's watermarks are
    /// read (ADR 0025).
    pub prune: PruneSettings,
}

/// 16 MiB of 1 KiB pages, the volume of ADR 0006. Not smaller: movements touch index pages
/// all over the file, so a checkpoint writes about the same set of pages whatever the WAL
/// holds, plus an fsync of the database; 4 MiB made the p99 several times worse.
pub const DEFAULT_CHECKPOINT_PAGES: u32 = 16384;

/// While groups keep coming, the WAL absorbs a burst up to this many times `checkpoint_pages`
/// (512 MiB by default, about 6 s of 50,000 events/s) before the checkpointer folds it in
/// under load (ADR 0014). A checkpoint writes every page again and fsyncs the database; done
/// during a burst, those writes sit in the disk queue in front of every commit's WAL fsync
/// (paced p99 16–31 ms folding under load, 3.2–5.1 ms with the fold deferred). None while
/// the disk is below its free-space watermark.
const BURST_FACTOR: u32 = 32;

/// Past the burst budget the WAL may grow by this many times `checkpoint_pages` (48 MiB by
/// default) before the writer checkpoints between two groups itself, whatever the
/// checkpointer copied.
const CHECKPOINT_HARD_EXTRA: u32 = 3;

/// No command for this long and the writer counts as idle: the checkpointer then folds the WAL
/// in (from `checkpoint_pages` up). Long enough that a scheduling hiccup inside a burst is not
/// mistaken for its end; a store's ordinary traffic leaves gaps this long many times a second.
const IDLE_FOLD_AFTER: Duration = Duration::from_millis(50);

/// Movements filed by SKU per transaction when the writer is idle: small enough that a command
/// arriving meanwhile waits a few milliseconds at most.
const FILE_CHUNK: i64 = 1024;

/// Delivered events one group deletes at most: the rest wait for the next groups. An uplink draining a backlog acknowledges tens of thousands of events between two
/// groups; deleting them all in one group held its tills' sales for 0.3–1 s (the tickets
/// bench, busy Saturday). Groups run back to back while deliveries wait, so a drain still
/// deletes far faster than central acknowledges.
const DELETES_PER_GROUP: u64 = 2048;

/// Unfiled idempotency keys before the writer files a chunk after every group even under load:
/// the writer keeps 16 bytes per unfiled key in memory (ADR 0015: about 8.5 MiB for a burst,
/// 17 MiB if keyed load goes on past this bound, given back when they are filed), about 5 s of
/// 50,000 events/s.
const UNFILED_MAX: u64 = 262_144;

/// Unfiled movement rows before the writer files a chunk after every group even under load:
/// every stock figure (a lookup, a count) range-scans them, so this bounds its cost (about
/// 1 ms). Counted in rows, not seqs: a ticket is a movement per line. A quarter million rows
/// (the bound before multi-line facts, in seqs) made a price check take 27 ms while 32 tills
/// sold 5-line tickets (the tickets bench).
const UNFILED_ROWS_MAX: u64 = 32_768;

/// Past the burst budget, the checkpointer runs another round each time this fraction of
/// `checkpoint_pages` (2 MiB by default) is uncopied: rounds then stay short, and when the
/// writer reaches the hard limit it has only the last round's worth left to copy. Waiting for
/// a whole `checkpoint_pages` each time left the writer a large copy (p99 159 ms vs 48 ms
/// paced, ADR 0013).
const CHECKPOINT_ROUND_DIVISOR: u32 = 8;

thread_local! {
    /// Frames in the WAL after the last commit made on this thread, from SQLite's WAL hook.
    /// Thread-local because the hook is a plain function and each writer owns its thread.
    static WAL_FRAMES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(_wal: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(u32::try_from(frames).unwrap_or(0));
    Ok(())
}

/// An alarm the operator must see until its cause is gone or it is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Alarm {
    pub code: String,
    pub raised_ms: i64,
    pub message: String,
}

pub(crate) enum WriterCommand {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<Result<Appended, OutboxError>>,
    },
    RaiseAlarm {
        code: String,
        message: String,
        reply: oneshot::Sender<()>,
    },
    /// An operator acknowledged the alarm (e.g. after re-importing the replica).
    ClearAlarm {
        code: String,
        reply: oneshot::Sender<bool>,
    },
    /// These events reached central (PUBACK or central's ack): delete them. Joins the next
    /// group's transaction, so deliveries cost no fsync of their own under load.
    Delivered { ranges: Vec<[u64; 2]> },
    /// The broker refused these events (e.g. not authorised): park them as dead letters,
    /// raise the alarm, and stop retrying them until an operator requeues.
    DeadLetter {
        ranges: Vec<[u64; 2]>,
        alarm_code: &'static str,
        message: String,
        /// Answered once the rows are parked and the alarm raised, so the `state` the
        /// session republishes next already counts them (issue 19: it lagged one behind).
        reply: oneshot::Sender<()>,
    },
    /// Put every dead letter back in line (after the operator fixed the cause).
    Requeue {
        reply: oneshot::Sender<Result<u64, OutboxError>>,
    },
}

/// Shared, cheap view of the outbox for health and metrics; updated by the writer after each
/// commit so nobody has to scan the table to answer "how far behind are we".
#[derive(Default)]
struct Shared {
    stats: OutboxStats,
    alarms: Vec<Alarm>,
    dead_letters: u64,
}

/// Cloneable handle producers use. Dropping every handle stops the writer.
#[derive(Clone)]
pub struct OutboxHandle {
    sender: mpsc::Sender<WriterCommand>,
    shared: Arc<Mutex<Shared>>,
    /// The newest committed `seq`: the uplink waits on it instead of polling the table.
    appended: tokio::sync::watch::Receiver<u64>,
}

/// Owns the writer thread; `join` waits for it to drain, checkpoint and close.
pub struct OutboxWriter {
    thread: Option<JoinHandle<()>>,
}

impl OutboxWriter {
    pub fn start(
        path: &Path,
        settings: WriterSettings,
    ) -> Result<(OutboxHandle, OutboxWriter), OutboxError> {
        let mut conn = storage::open_writer(path, Durability::StoreFacts)?;
        storage::migrate(&mut conn, path, super::MIGRATIONS)?;
        let sql_err = |source| storage::StorageError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        // Every start is a new boot: consumers use (boot, mono_ns) to order events whose wall
        // clock jumped.
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'boot'", [])
            .map_err(sql_err)?;
        if settings.seq_floor > 0 {
            conn.execute(
                "UPDATE meta SET value = MAX(value, ?1) WHERE key = 'last_seq'",
                [i64::try_from(settings.seq_floor).unwrap_or(i64::MAX)],
            )
            .map_err(sql_err)?;
        }
        let initial = stats::read(&conn).map_err(sql_err)?;
        let (sku_indexed_upto, movements_upto, unfiled_rows) = conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'sku_indexed_upto'),
                        (SELECT COALESCE(MAX(seq), 0) FROM stock_movements),
                        (SELECT COUNT(*) FROM stock_movements WHERE seq >
                            (SELECT value FROM meta WHERE key = 'sku_indexed_upto'))",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .map_err(sql_err)?;
        let (sku_indexed_upto, movements_upto, unfiled_rows) = (
            sku_indexed_upto.max(0) as u64,
            movements_upto.max(0) as u64,
            unfiled_rows.max(0) as u64,
        );
        let alarms = load_alarms(&conn).map_err(sql_err)?;
        let keys = UnfiledKeys::load(&conn, UNFILED_MAX as usize).map_err(sql_err)?;
        let dead_letters = stats::dead_letters(&conn).map_err(sql_err)?;
        let shared = Arc::new(Mutex::new(Shared {
            stats: initial.clone(),
            alarms,
            dead_letters,
        }));
        let (appended_tx, appended) = tokio::sync::watch::channel(initial.last_seq);
        // Bounded: when the disk stalls, producers wait instead of piling up memory.
        let (sender, receiver) = mpsc::channel(settings.group_commit_max.max(1) * 4);
        // Opened after the migrations above, so it never sees a half-made schema.
        let checkpointer = (settings.checkpoint_pages > 0)
            .then(|| Checkpointer::start(path))
            .transpose()?;
        let pruner = Pruner::new(settings.prune.clone());
        let mut state = WriterState {
            conn,
            pruner,
            path: path.to_path_buf(),
            data_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            settings,
            appender: Appender {
                next_seq: initial.last_seq + 1,
                boot: initial.boot,
                stats: initial,
                keys,
                sku_indexed_upto,
                movements_upto,
                unfiled_rows,
            },
            shared: Arc::clone(&shared),
            disk_checked_at: None,
            disk_low: None,
            deliveries: Default::default(),
            appended: appended_tx,
            checkpointer,
        };
        let thread = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || state.run(receiver))
            .map_err(|e| OutboxError::Commit(format!("cannot start the writer thread: {e}")))?;
        Ok((
            OutboxHandle {
                sender,
                shared,
                appended,
            },
            OutboxWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Wait until every handle is dropped and the writer has drained and checkpointed.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Create or upgrade the outbox schema without starting a writer (for CLI commands that read).
pub fn migrate_only(path: &Path) -> Result<(), OutboxError> {
    let mut conn = storage::open_writer(path, Durability::StoreFacts)?;
    storage::migrate(&mut conn, path, super::MIGRATIONS)?;
    Ok(())
}

impl OutboxHandle {
    /// True once the writer thread has stopped (shutdown, or a fatal error): appends fail.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Queue an append in order and return without waiting for it to be durable: the returned
    /// receiver resolves when it is. For producers that tell nobody (device reads), so a scan
    /// never waits for the fsync of the one before it; they still queue in order and feel the
    /// writer's backpressure.
    pub async fn enqueue(
        &self,
        request: AppendRequest,
    ) -> Result<oneshot::Receiver<Result<Appended, OutboxError>>, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(WriterCommand::Append { request, reply })
            .await
            .map_err(|_| OutboxError::Closed)?;
        Ok(answer)
    }

    /// Append and wait until the event is durable.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(WriterCommand::Append { request, reply })
            .await
            .map_err(|_| OutboxError::Closed)?;
        answer.await.map_err(|_| OutboxError::Closed)?
    }

    /// Same as [`append`](Self::append) for threads outside the async runtime (devices, CLI).
    pub fn append_blocking(&self, request: AppendRequest) -> Result<Appended, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .blocking_send(WriterCommand::Append { request, reply })
            .map_err(|_| OutboxError::Closed)?;
        answer.blocking_recv().map_err(|_| OutboxError::Closed)?
    }

    /// Append many events from one thread without waiting for each commit: the writer
    /// groups them. For bulk loads (tests, benchmarks, migrations); returns once all are
    /// durable, with the first error if any.
    pub fn append_pipelined_blocking(
        &self,
        requests: impl IntoIterator<Item = AppendRequest>,
    ) -> Result<Vec<Appended>, OutboxError> {
        let mut answers = Vec::new();
        for request in requests {
            let (reply, answer) = oneshot::channel();
            self.sender
                .blocking_send(WriterCommand::Append { request, reply })
                .map_err(|_| OutboxError::Closed)?;
            answers.push(answer);
        }
        answers
            .into_iter()
            .map(|a| a.blocking_recv().map_err(|_| OutboxError::Closed)?)
            .collect()
    }

    /// Record an alarm durably (e.g. "the previous outbox was damaged and moved aside"); returns
    /// once health shows it.
    pub async fn raise_alarm(&self, code: &str, message: String) {
        let (reply, done) = oneshot::channel();
        let command = WriterCommand::RaiseAlarm {
            code: code.to_string(),
            message,
            reply,
        };
        if self.sender.send(command).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Acknowledge an alarm; returns whether it was raised.
    pub async fn clear_alarm(&self, code: &str) -> Result<bool, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(WriterCommand::ClearAlarm {
                code: code.to_string(),
                reply,
            })
            .await
            .map_err(|_| OutboxError::Closed)?;
        answer.await.map_err(|_| OutboxError::Closed)
    }

    /// Report delivered events; they are deleted in the writer's next transaction.
    pub async fn delivered(&self, ranges: Vec<[u64; 2]>) -> Result<(), OutboxError> {
        self.sender
            .send(WriterCommand::Delivered { ranges })
            .await
            .map_err(|_| OutboxError::Closed)
    }

    /// Park refused events as dead letters and raise `alarm_code`.
    pub async fn dead_letter(
        &self,
        ranges: Vec<[u64; 2]>,
        alarm_code: &'static str,
        message: String,
    ) -> Result<(), OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(WriterCommand::DeadLetter {
                ranges,
                alarm_code,
                message,
                reply,
            })
            .await
            .map_err(|_| OutboxError::Closed)?;
        answer.await.map_err(|_| OutboxError::Closed)
    }

    /// Put every dead letter back in line; returns how many.
    pub async fn requeue_dead_letters(&self) -> Result<u64, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(WriterCommand::Requeue { reply })
            .await
            .map_err(|_| OutboxError::Closed)?;
        answer.await.map_err(|_| OutboxError::Closed)?
    }

    /// Watch the newest committed sequence number.
    pub fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.clone()
    }

    pub fn dead_letters(&self) -> u64 {
        self.shared.lock().map(|s| s.dead_letters).unwrap_or(0)
    }

    pub fn stats(&self) -> OutboxStats {
        self.shared
            .lock()
            .map(|s| s.stats.clone())
            .unwrap_or_default()
    }

    pub fn alarms(&self) -> Vec<Alarm> {
        self.shared
            .lock()
            .map(|s| s.alarms.clone())
            .unwrap_or_default()
    }
}

/// What each request of a committed group was answered, and the delivered ranges its delete
/// budget left for the next group.
type GroupOutcome = (Vec<Result<Appended, OutboxError>>, Vec<[u64; 2]>);

struct Pending {
    request: AppendRequest,
    reply: oneshot::Sender<Result<Appended, OutboxError>>,
}

struct WriterState {
    conn: Connection,
    /// Deletes the history central covers, a chunk at a time when idle (ADR 0025).
    pruner: Pruner,
    path: PathBuf,
    data_dir: PathBuf,
    settings: WriterSettings,
    /// Sequence, stats and keys: what a group's appends change besides the database.
    appender: Appender,
    shared: Arc<Mutex<Shared>>,
    disk_checked_at: Option<Instant>,
    disk_low: Option<u64>,
    /// Delivered ranges waiting for the next transaction.
    deliveries: std::collections::VecDeque<[u64; 2]>,
    appended: tokio::sync::watch::Sender<u64>,
    /// Folds the WAL into the database on its own thread; `None` when `checkpoint_pages` is 0
    /// (SQLite's auto-checkpoint then runs inside the commit, as before ADR 0011).
    checkpointer: Option<Checkpointer>,
}

/// Free space changes slowly; statvfs once a second is plenty.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// An idle writer still looks at the disk this often: the `disk_low` alarm must show in
/// `/v1/health` when the disk fills with no sale or telemetry to notice it (issue 20).
pub(crate) const DISK_TIMER: Duration = Duration::from_secs(10);

/// The one wording of the `disk_low` alarm, the log line and the doctor: below the watermark,
/// either space is freed or the watermark comes down to what is left.
pub fn disk_low_message(free_mb: u64, watermark_mb: u64) -> String {
    format!(
        "{free_mb} MiB free on the data disk, below disk.low_free_mb = {watermark_mb} MiB: \
         telemetry is refused, store facts are still recorded. Free space on that volume, or \
         lower disk.low_free_mb"
    )
}

impl WriterState {
    fn run(&mut self, mut receiver: mpsc::Receiver<WriterCommand>) {
        // SQLite's auto-checkpoint runs inside the COMMIT that crosses the threshold: it copies
        // the WAL into the database and fsyncs it before that group's producers can be told.
        // Installing a WAL hook turns it off; `checkpoint_if_due` runs it after the replies.
        if self.settings.checkpoint_pages > 0 {
            self.conn.wal_hook(Some(note_wal_frames));
        }
        WAL_FRAMES.set(0);
        // After a burst the WAL file would keep its size on disk (SQLite reuses it once it
        // rewinds); this shrinks it back at the first commit after the rewind.
        let limit = i64::from(self.settings.checkpoint_pages) * 1024;
        if limit > 0
            && let Err(e) = self
                .conn
                .execute_batch(&format!("PRAGMA journal_size_limit={limit};"))
        {
            tracing::warn!(error = %e, "cannot bound the outbox WAL's size after a checkpoint");
        }
        // Only for timing out the wait for the next command (see `next_command`).
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok();
        let mut batch: Vec<Pending> = Vec::with_capacity(self.settings.group_commit_max);
        // At startup, not at the first append: a full disk is an alarm before any sale. An
        // alarm left by the last run is cleared here when the space came back meanwhile.
        if self.alarm_exists("disk_low") {
            self.disk_low = Some(0);
        }
        self.disk_low_now();
        loop {
            // Deliveries still to delete make a group of their own when nothing else comes.
            let first = if self.deliveries.is_empty() {
                self.next_command(&mut receiver, timer.as_ref())
            } else {
                match receiver.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            };
            match first {
                Some(first) => self.accept(first, &mut batch),
                None if self.deliveries.is_empty() => break,
                None => {}
            }
            // Everything that queued while the last fsync ran joins this group.
            while batch.len() < self.settings.group_commit_max {
                match receiver.try_recv() {
                    Ok(command) => self.accept(command, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() || !self.deliveries.is_empty() {
                self.commit_group(&mut batch);
            }
            if self.appender.unfiled_rows >= UNFILED_ROWS_MAX {
                self.file_movements();
            }
            if self.appender.keys.len() as u64 >= UNFILED_MAX {
                self.file_keys();
            }
            self.checkpoint_if_due();
            // Store facts alone never ask: a busy till must not hide a filling disk either.
            self.disk_low_now();
        }
        // All producers are gone. Stop the checkpointer first (a TRUNCATE would find its
        // checkpoint lock taken), then fold the WAL into the main file so the next start is fast.
        drop(self.checkpointer.take());
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "outbox checkpoint at shutdown failed; the WAL will be replayed at next start");
        }
    }

    /// Wait for the next command. While movements wait to be filed by SKU, or the WAL holds
    /// frames the checkpointer has not copied past `checkpoint_pages`, the wait times out after
    /// `IDLE_FOLD_AFTER`: the load paused, so that work is done now, when it delays nobody's
    /// commit. Movements are filed first (their pages then get folded in with the rest).
    fn next_command(
        &mut self,
        receiver: &mut mpsc::Receiver<WriterCommand>,
        timer: Option<&tokio::runtime::Runtime>,
    ) -> Option<WriterCommand> {
        loop {
            let Some(timer) = timer else {
                return receiver.blocking_recv();
            };
            let deferred = self.unfiled_work() || self.idle_fold_pending() || self.pruner.due_now();
            // Pruning waits for its own time (a round, or the settle time) when nothing else
            // is deferred; the load pausing `IDLE_FOLD_AFTER` is still what lets it run.
            let wait = if deferred {
                IDLE_FOLD_AFTER
            } else {
                self.pruner.due_at().map_or(DISK_TIMER, |at| {
                    at.saturating_duration_since(Instant::now())
                        .clamp(IDLE_FOLD_AFTER, DISK_TIMER)
                })
            };
            // The timeout is made inside the runtime: its timer needs the runtime's context.
            let next = timer.block_on(async { tokio::time::timeout(wait, receiver.recv()).await });
            match next {
                Ok(command) => return command,
                Err(_idle) => {
                    self.disk_low_now();
                    // One chunk per transaction, and back to the channel between chunks.
                    while self.unfiled_work() && self.file_next_chunk() {
                        match receiver.try_recv() {
                            Ok(command) => return Some(command),
                            Err(mpsc::error::TryRecvError::Disconnected) => return None,
                            Err(mpsc::error::TryRecvError::Empty) => {}
                        }
                    }
                    // Pruning after filing (its deletes find the movements filed), a chunk
                    // per transaction like filing.
                    while !self.unfiled_work() && self.pruner.due_now() && self.prune_step() {
                        match receiver.try_recv() {
                            Ok(command) => return Some(command),
                            Err(mpsc::error::TryRecvError::Disconnected) => return None,
                            Err(mpsc::error::TryRecvError::Empty) => {}
                        }
                    }
                    // The round runs on its own thread: a command arriving meanwhile is
                    // committed at once (the round then shares the disk with it).
                    if self.idle_fold_pending()
                        && let Some(checkpointer) = &self.checkpointer
                    {
                        checkpointer.request();
                    }
                }
            }
        }
    }

    /// One bounded step of pruning; false when it failed (logged; the round starts over
    /// later, and nothing is deleted that was not marked and settled).
    fn prune_step(&mut self) -> bool {
        let last_seq = self.appender.next_seq.saturating_sub(1);
        match self.pruner.step(&mut self.conn, last_seq) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "pruning the outbox history failed; the history is kept and the next round tries again");
                false
            }
        }
    }

    fn unfiled(&self) -> bool {
        self.appender.movements_upto > self.appender.sku_indexed_upto
    }

    /// Movements to file by SKU, or idempotency keys to move into `idempotency`.
    fn unfiled_work(&self) -> bool {
        self.unfiled() || !self.appender.keys.is_empty()
    }

    /// One chunk of deferred filing, movements first; false when it failed.
    fn file_next_chunk(&mut self) -> bool {
        if self.unfiled() {
            self.file_movements()
        } else {
            self.file_keys()
        }
    }

    /// Move the oldest `FILE_CHUNK` unfiled idempotency keys into `idempotency`. Returns false
    /// when that failed (logged; retried at the next idle moment: replays are still found,
    /// through `unfiled_keys`).
    fn file_keys(&mut self) -> bool {
        match self.appender.keys.file_chunk(&mut self.conn, FILE_CHUNK) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "filing idempotency keys failed; retries are still recognised, retried when idle");
                false
            }
        }
    }

    /// File the oldest unfiled movements (up to `FILE_CHUNK`) into `sku_movements` and move
    /// `meta.sku_indexed_upto` past them, in one transaction. Returns false when that failed
    /// (logged; retried at the next idle moment: lookups stay exact meanwhile, the unfiled
    /// rows are range-scanned).
    fn file_movements(&mut self) -> bool {
        let from = self.appender.sku_indexed_upto as i64;
        let filed = (|| -> Result<Option<(i64, usize)>, rusqlite::Error> {
            let tx = self.conn.transaction()?;
            let upto: Option<i64> = tx
                .prepare_cached(
                    "SELECT MAX(seq) FROM (SELECT seq FROM stock_movements WHERE seq > ?1
                                           ORDER BY seq LIMIT ?2)",
                )?
                .query_row(params![from, FILE_CHUNK], |r| r.get(0))?;
            let Some(upto) = upto else {
                return Ok(None);
            };
            let rows = tx
                .prepare_cached(
                    "INSERT INTO sku_movements(sku, seq, line, delta)
                     SELECT sku, seq, line, delta FROM stock_movements
                     WHERE seq > ?1 AND seq <= ?2",
                )?
                .execute(params![from, upto])?;
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'sku_indexed_upto'")?
                .execute([upto])?;
            tx.commit()?;
            Ok(Some((upto, rows)))
        })();
        match filed {
            Ok(Some((upto, rows))) => {
                self.appender.sku_indexed_upto = upto as u64;
                self.appender.unfiled_rows = self.appender.unfiled_rows.saturating_sub(rows as u64);
                true
            }
            // Nothing after the watermark: the newest movement belonged to a rolled-back group.
            Ok(None) => {
                self.appender.movements_upto = self.appender.sku_indexed_upto;
                self.appender.unfiled_rows = 0;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "filing stock movements by SKU failed; lookups scan them meanwhile, retried when idle");
                false
            }
        }
    }

    /// Whether an idle writer should have the checkpointer fold the WAL in: past
    /// `checkpoint_pages` frames, some of them not copied yet, no round running.
    fn idle_fold_pending(&self) -> bool {
        let soft = self.settings.checkpoint_pages;
        let frames = WAL_FRAMES.get();
        let Some(checkpointer) = &self.checkpointer else {
            return false;
        };
        if soft == 0 || frames < soft {
            return false;
        }
        // A copied count above the frames is a stale one from before the WAL rewound.
        let progress = checkpointer.progress();
        !progress.busy && progress.backfilled != frames
    }

    fn accept(&mut self, command: WriterCommand, batch: &mut Vec<Pending>) {
        match command {
            WriterCommand::Append { request, reply } => {
                if matches!(&request.body, AppendBody::Event(draft) if draft.class == RetentionClass::Telemetry)
                    && let Some(free_mb) = self.disk_low_now()
                {
                    let _ = reply.send(Err(OutboxError::DiskLow {
                        free_mb,
                        watermark_mb: self.settings.low_free_mb,
                    }));
                    return;
                }
                batch.push(Pending { request, reply });
            }
            WriterCommand::RaiseAlarm {
                code,
                message,
                reply,
            } => {
                self.raise_alarm(&code, &message);
                let _ = reply.send(());
            }
            WriterCommand::ClearAlarm { code, reply } => {
                let existed = self.alarm_exists(&code);
                self.clear_alarm(&code);
                let _ = reply.send(existed);
            }
            WriterCommand::Delivered { ranges } => self.deliveries.extend(ranges),
            WriterCommand::DeadLetter {
                ranges,
                alarm_code,
                message,
                reply,
            } => {
                self.dead_letter(&ranges, alarm_code, &message);
                let _ = reply.send(());
            }
            WriterCommand::Requeue { reply } => {
                let _ = reply.send(self.requeue());
            }
        }
    }

    /// Returns the free MB when below the watermark, raising or clearing the alarm as it changes.
    fn disk_low_now(&mut self) -> Option<u64> {
        let due = self
            .disk_checked_at
            .is_none_or(|at| at.elapsed() >= DISK_CHECK_INTERVAL);
        if due {
            self.disk_checked_at = Some(Instant::now());
            let free_mb = storage::free_bytes(&self.data_dir).map(|b| b / (1024 * 1024));
            let low = free_mb.filter(|mb| *mb < self.settings.low_free_mb);
            match (self.disk_low, low) {
                (None, Some(mb)) => {
                    tracing::error!(
                        free_mb = mb,
                        watermark_mb = self.settings.low_free_mb,
                        "disk nearly full: refusing droppable events; store facts still accepted"
                    );
                    self.raise_alarm("disk_low", &disk_low_message(mb, self.settings.low_free_mb));
                }
                (Some(_), None) => self.clear_alarm("disk_low"),
                _ => {}
            }
            self.disk_low = low;
        }
        self.disk_low
    }

    fn raise_alarm(&mut self, code: &str, message: &str) {
        let raised_ms = storage::now_unix_ms();
        let result = self.conn.execute(
            "INSERT INTO alarms(code, raised_ms, message) VALUES (?1, ?2, ?3)
             ON CONFLICT(code) DO UPDATE SET message = excluded.message",
            params![code, raised_ms, message],
        );
        if let Err(e) = result {
            tracing::error!(error = %e, code, "cannot persist alarm");
        }
        if let Ok(mut shared) = self.shared.lock() {
            shared.alarms.retain(|a| a.code != code);
            shared.alarms.push(Alarm {
                code: code.to_string(),
                raised_ms,
                message: message.to_string(),
            });
        }
    }

    fn dead_letter(&mut self, ranges: &[[u64; 2]], alarm_code: &str, message: &str) {
        let result = (|| -> Result<(), rusqlite::Error> {
            let tx = self.conn.transaction()?;
            for [first, last] in ranges {
                tx.execute(
                    "UPDATE events SET state = 2 WHERE seq BETWEEN ?1 AND ?2 AND state = 0",
                    params![*first as i64, *last as i64],
                )?;
            }
            tx.commit()
        })();
        match result
            .and_then(|()| stats::read(&self.conn).map(|s| (s, stats::dead_letters(&self.conn))))
        {
            Ok((fresh, dead)) => {
                self.appender.stats.store_fact = fresh.store_fact;
                self.appender.stats.telemetry = fresh.telemetry;
                if let Ok(mut shared) = self.shared.lock() {
                    shared.stats = self.appender.stats.clone();
                    shared.dead_letters = dead.unwrap_or(0);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot park refused events as dead letters; they stay queued")
            }
        }
        self.raise_alarm(alarm_code, message);
    }

    fn requeue(&mut self) -> Result<u64, OutboxError> {
        let requeued = self
            .conn
            .execute("UPDATE events SET state = 0 WHERE state = 2", [])
            .map_err(|e| OutboxError::Commit(e.to_string()))?;
        let fresh = stats::read(&self.conn).map_err(|e| OutboxError::Commit(e.to_string()))?;
        self.appender.stats.store_fact = fresh.store_fact;
        self.appender.stats.telemetry = fresh.telemetry;
        if let Ok(mut shared) = self.shared.lock() {
            shared.stats = self.appender.stats.clone();
            shared.dead_letters = 0;
        }
        self.clear_alarm(crate::outbox::ALARM_UPLINK_REFUSED);
        self.clear_alarm(crate::outbox::ALARM_UPLINK_TOO_LARGE);
        // Wake the uplink: the requeued rows are new work for it.
        self.appended.send_replace(self.appender.stats.last_seq);
        Ok(requeued as u64)
    }

    fn alarm_exists(&self, code: &str) -> bool {
        self.shared
            .lock()
            .map(|s| s.alarms.iter().any(|a| a.code == code))
            .unwrap_or(false)
    }

    fn clear_alarm(&mut self, code: &str) {
        let _ = self
            .conn
            .execute("DELETE FROM alarms WHERE code = ?1", [code]);
        if let Ok(mut shared) = self.shared.lock() {
            shared.alarms.retain(|a| a.code != code);
        }
    }

    /// Keep the WAL bounded under sustained load without stopping the writer for a whole
    /// checkpoint (ADR 0013, 0014). An idle writer has the WAL folded in from
    /// `checkpoint_pages` up (`next_command`); while groups keep coming the WAL absorbs the
    /// burst up to its budget, and past it the checkpointer thread copies frames into the
    /// database while groups keep committing. When it copied everything between two commits
    /// the next commit rewinds the WAL by itself. The writer checkpoints itself only at the
    /// hard limit, to force that rewind; the checkpointer has copied all but its last round by
    /// then. Every frame copied was committed with FULL sync already, so none of this changes
    /// what an acknowledged event survives.
    fn checkpoint_if_due(&mut self) {
        let soft = self.settings.checkpoint_pages;
        let frames = WAL_FRAMES.get();
        // The burst budget is never below `soft`; below it there is nothing to ask the disk.
        if soft == 0 || frames < soft {
            return;
        }
        let burst = self.burst_pages();
        if frames < burst {
            return;
        }
        let hard = burst.saturating_add(soft.saturating_mul(CHECKPOINT_HARD_EXTRA));
        let Some(checkpointer) = &self.checkpointer else {
            return;
        };
        let mut progress = checkpointer.progress();
        if progress.busy {
            if frames < hard.saturating_mul(2) {
                return;
            }
            // The disk cannot copy as fast as groups commit: stop committing until the round
            // ends, so the WAL (and the disk it takes) stays bounded.
            checkpointer.wait_idle();
            progress = checkpointer.progress();
        }
        // Frames only grow within one generation of the WAL, and the checkpointer cannot have
        // copied frames the writer has not committed: more copied than written means the WAL
        // started over since that round, and its count is stale.
        let backfilled = if progress.backfilled > frames {
            0
        } else {
            progress.backfilled
        };
        let uncopied = frames - backfilled;
        if frames >= hard {
            self.checkpoint_here();
        } else if uncopied >= (soft / CHECKPOINT_ROUND_DIVISOR).max(1) {
            checkpointer.request();
        }
    }

    /// How many WAL frames a burst may leave unfolded while groups keep coming. A disk below
    /// its free-space watermark cannot spare the room: the WAL is then folded in under load
    /// from `checkpoint_pages` up, as before ADR 0014.
    fn burst_pages(&mut self) -> u32 {
        let soft = self.settings.checkpoint_pages;
        if self.disk_low_now().is_some() {
            soft
        } else {
            soft.saturating_mul(BURST_FACTOR)
        }
    }

    /// A `PASSIVE` checkpoint on the writer's own connection, between groups: no commit can
    /// slip in while it runs, so when it copies everything the next commit rewinds the WAL.
    fn checkpoint_here(&mut self) {
        match checkpointer::checkpoint_passive(&self.conn) {
            // All copied: the next commit starts the WAL over, so count from zero.
            Ok(round) if !round.busy && round.copied >= round.log => {
                WAL_FRAMES.set(0);
                if let Some(checkpointer) = &self.checkpointer {
                    checkpointer.forget_backfill();
                }
            }
            // A reader still uses part of the WAL: the rest is copied after a later group.
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "outbox checkpoint failed; retried after the next group")
            }
        }
    }

    fn commit_group(&mut self, batch: &mut Vec<Pending>) {
        let first_seq = self.appender.next_seq;
        let before = self.appender.stats.clone();
        let unfiled_before = self.appender.unfiled_rows;
        let deliveries: Vec<[u64; 2]> = self.deliveries.drain(..).collect();
        match self.write_group(batch, &deliveries) {
            Ok((outcomes, left)) => {
                // What this group's delete budget did not reach, first in line for the next.
                for range in left.into_iter().rev() {
                    self.deliveries.push_front(range);
                }
                // Stats first, so a producer that reads them after its reply sees its own event.
                if let Ok(mut shared) = self.shared.lock() {
                    shared.stats = self.appender.stats.clone();
                }
                if self.appender.next_seq > first_seq {
                    self.appended.send_replace(self.appender.next_seq - 1);
                }
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.reply.send(outcome);
                }
            }
            Err(e) => {
                // Nothing of this group is on disk: rewind and tell every producer so. The
                // deliveries it carried are still to be deleted: the next group takes them.
                self.appender.next_seq = first_seq;
                self.appender.keys.forget_from(first_seq);
                self.appender.stats = before;
                self.appender.unfiled_rows = unfiled_before;
                for range in deliveries.into_iter().rev() {
                    self.deliveries.push_front(range);
                }
                tracing::error!(error = %e, path = %self.path.display(), events = batch.len(),
                    "outbox commit failed; producers were told nothing was recorded");
                let message = e.to_string();
                for pending in batch.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(OutboxError::Commit(message.clone())));
                }
            }
        }
    }

    fn write_group(
        &mut self,
        batch: &mut [Pending],
        deliveries: &[[u64; 2]],
    ) -> Result<GroupOutcome, rusqlite::Error> {
        let clock = GroupClock {
            wall_ms: storage::now_unix_ms(),
            mono_ns: super::monotonic_ns(),
        };
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for pending in batch.iter_mut() {
            outcomes.push(self.appender.append(&tx, &mut pending.request, clock)?);
        }
        let last_seq = self.appender.next_seq - 1;
        // `meta.last_seq` is not rewritten here: the rows just inserted carry their seq, and
        // restart takes the max over them. It must be raised before any delete that could
        // remove the newest row (quota trimming below, delivery), so a seq is never reused.
        trim_telemetry(
            &tx,
            &mut self.appender.stats,
            self.settings.telemetry_quota_rows,
            last_seq,
        )?;
        let left = if deliveries.is_empty() {
            Vec::new()
        } else {
            delete_delivered(&tx, &mut self.appender.stats, deliveries, last_seq)?
        };
        tx.commit()?;
        Ok((outcomes, left))
    }
}

/// Keep telemetry within its quota by dropping the oldest rows, in the same transaction as
/// the appends that overflowed it. Store facts are never touched here.
fn trim_telemetry(
    tx: &rusqlite::Transaction<'_>,
    stats: &mut OutboxStats,
    quota: u64,
    last_seq: u64,
) -> Result<(), rusqlite::Error> {
    let telemetry = stats.class(RetentionClass::Telemetry);
    let excess = telemetry.depth.saturating_sub(quota);
    if excess == 0 {
        return Ok(());
    }
    tx.execute(
        "UPDATE meta SET value = MAX(value, ?1) WHERE key = 'last_seq'",
        [last_seq as i64],
    )?;
    // `class = 1` is written literally so the planner can use the partial telemetry index.
    let bytes: i64 = tx.query_row(
        "SELECT COALESCE(SUM(length(payload)), 0) FROM
           (SELECT payload FROM events WHERE class = 1 ORDER BY seq LIMIT ?1)",
        [excess as i64],
        |r| r.get(0),
    )?;
    tx.execute(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE class = 1 ORDER BY seq LIMIT ?1)",
        [excess as i64],
    )?;
    let oldest: Option<i64> = tx
        .query_row(
            "SELECT wall_ms FROM events WHERE class = 1 AND state = 0 ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    stats.record_drop(
        RetentionClass::Telemetry,
        excess,
        bytes.max(0) as u64,
        oldest,
    );
    Ok(())
}

/// Delete delivered events, at most `DELETES_PER_GROUP` of them, and keep the stats exact;
/// returns the ranges (or their tails) left for the next group. Dead letters (state 2) are not
/// touched: a late PUBACK must not silently erase what an operator still has to look at.
fn delete_delivered(
    tx: &rusqlite::Transaction<'_>,
    stats: &mut OutboxStats,
    ranges: &[[u64; 2]],
    last_seq: u64,
) -> Result<Vec<[u64; 2]>, rusqlite::Error> {
    tx.execute(
        "UPDATE meta SET value = MAX(value, ?1) WHERE key = 'last_seq'",
        [last_seq as i64],
    )?;
    // Likewise the fact numbering: the newest fact may be among the rows deleted below.
    tx.execute(
        "UPDATE meta SET value = MAX(value, ?1) WHERE key = 'last_fact_seq'",
        [stats.last_fact_seq.min(i64::MAX as u64) as i64],
    )?;
    let mut count = tx.prepare_cached(
        "SELECT class, COUNT(*), COALESCE(SUM(length(payload)), 0) FROM events
         WHERE seq BETWEEN ?1 AND ?2 AND state = 0 GROUP BY class",
    )?;
    let mut delete =
        tx.prepare_cached("DELETE FROM events WHERE seq BETWEEN ?1 AND ?2 AND state = 0")?;
    // The seq of the `?3`-th deliverable event of a range (the last one when it holds fewer),
    // and how many that is.
    let mut reach = tx.prepare_cached(
        "SELECT MAX(seq), COUNT(*) FROM
           (SELECT seq FROM events WHERE seq BETWEEN ?1 AND ?2 AND state = 0 ORDER BY seq LIMIT ?3)",
    )?;
    let mut touched = [false; 2];
    let mut budget = DELETES_PER_GROUP;
    let mut left = Vec::new();
    // Seqs past the newest ever assigned hold nothing: a range is cut there.
    for &[first, last] in ranges {
        let last = last.min(last_seq);
        if first > last {
            continue;
        }
        if budget == 0 {
            left.push([first, last]);
            continue;
        }
        let (first, last) = (first as i64, last.min(i64::MAX as u64) as i64);
        let (upto, n): (Option<i64>, i64) = reach
            .query_row(params![first, last, budget as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let n = n.max(0) as u64;
        let last = match upto {
            Some(upto) if n >= budget && upto < last => {
                left.push([upto as u64 + 1, last as u64]);
                upto
            }
            _ => last,
        };
        budget = budget.saturating_sub(n);
        let mut rows = count.query(params![first, last])?;
        while let Some(row) = rows.next()? {
            let Some(class) = RetentionClass::from_code(row.get(0)?) else {
                continue;
            };
            let n = row.get::<_, i64>(1)?.max(0) as u64;
            let bytes = row.get::<_, i64>(2)?.max(0) as u64;
            stats.record_delivered(class, n, bytes);
            touched[class.code() as usize] = true;
        }
        drop(rows);
        delete.execute(params![first, last])?;
    }
    for class in RetentionClass::ALL {
        if touched[class.code() as usize] {
            // Literal class values so the telemetry query can use its partial index.
            let sql = match class {
                RetentionClass::StoreFact => {
                    "SELECT wall_ms FROM events WHERE class = 0 AND state = 0 ORDER BY seq LIMIT 1"
                }
                RetentionClass::Telemetry => {
                    "SELECT wall_ms FROM events WHERE class = 1 AND state = 0 ORDER BY seq LIMIT 1"
                }
            };
            let oldest: Option<i64> = tx.query_row(sql, [], |r| r.get(0)).optional()?;
            stats.set_oldest(class, oldest);
        }
    }
    Ok(left)
}

fn load_alarms(conn: &Connection) -> Result<Vec<Alarm>, rusqlite::Error> {
    let mut stmt =
        conn.prepare("SELECT code, raised_ms, message FROM alarms ORDER BY raised_ms")?;
    let rows = stmt.query_map([], |r| {
        Ok(Alarm {
            code: r.get(0)?,
            raised_ms: r.get(1)?,
            message: r.get(2)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "fact_seq_tests.rs"]
mod fact_seq_tests;

#[cfg(test)]
#[path = "orders_tests.rs"]
mod orders_tests;
