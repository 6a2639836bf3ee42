#include "core/jobs/sqlite_job_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/jobs/postgres_job_store.h"
#include "core/util/file_util.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {
using json = nlohmann::json;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  idempotency_key TEXT UNIQUE,
  sweep_id TEXT NOT NULL DEFAULT '',
  spec TEXT NOT NULL,
  priority INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  phase TEXT NOT NULL DEFAULT '',
  progress REAL NOT NULL DEFAULT 0,
  message TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL DEFAULT 0,
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  result TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  affinity TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_run_order ON jobs(state, priority DESC, seq);
CREATE TABLE IF NOT EXISTS logs(
  job_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  time_ms INTEGER NOT NULL,
  level TEXT NOT NULL,
  message TEXT NOT NULL,
  phase TEXT NOT NULL DEFAULT '',
  progress REAL NOT NULL DEFAULT 0,
  state TEXT,
  PRIMARY KEY(job_id, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs(
  key TEXT PRIMARY KEY,
  id TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  recorded_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
)sql";

constexpr const char* kJobColumns =
    "seq, id, idempotency_key, sweep_id, spec, state, phase, progress, message, created_ms, started_ms, "
    "finished_ms, attempts, result, cancel_requested, affinity";

// The one place an SQLite failure becomes a Status. A full disk (SQLITE_FULL,
// or an I/O error whose errno is ENOSPC) is ResourceExhausted with what to do,
// so that callers can tell it from a bug and retry once space returns.
absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what) {
  const int primary = rc & 0xff;
  if (primary == SQLITE_FULL || (primary == SQLITE_IOERR && sqlite3_system_errno(db) == ENOSPC)) {
    const char* file = sqlite3_db_filename(db, "main");
    return absl::ResourceExhaustedError(
        absl::StrCat("the disk holding the job store ", file ? file : "", " is full: free space and retry"));
  }
  return absl::InternalError(absl::StrCat("job store: ", what, sqlite3_errmsg(db)));
}

// One prepared statement; finalized on destruction.
class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status prepared() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return SqliteError(db_, rc_, "cannot prepare statement: ");
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& BindDouble(int i, double v) {
    sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  Stmt& BindNull(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // True while a row is available; error status on failure.
  absl::StatusOr<bool> Step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, "");
  }
  absl::Status Run() { return Step().status(); }
  std::string Text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(stmt_, col)) : std::string();
  }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Double(int col) const { return sqlite3_column_double(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

class SqliteJobStore : public JobStore {
 public:
  explicit SqliteJobStore(sqlite3* db) : db_(db) {}
  ~SqliteJobStore() override {
    sqlite3_close_v2(reader_);
    sqlite3_close_v2(db_);
  }

  absl::Status Exec(const std::string& sql) {
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    return rc == SQLITE_OK ? absl::OkStatus() : SqliteError(db_, rc, "");
  }

  absl::Status Init() {
    std::lock_guard<std::mutex> lock(mu_);
    sqlite3_busy_timeout(db_, 10000);
    // A store that cannot be used is reported as data loss, with what to do; the file is left alone.
    auto damaged = [](absl::string_view what, absl::string_view detail) {
      return absl::DataLossError(
          absl::StrCat("job store ", what, ": ", detail, "; move it aside or point --store elsewhere"));
    };
    // Fails on a file that is not a database: report it as such.
    {
      Stmt s(db_, "PRAGMA user_version");
      if (!s.prepared().ok()) return damaged("is not a readable SQLite database", sqlite3_errmsg(db_));
      auto row = s.Step();
      if (!row.ok()) return damaged("is not a readable SQLite database", row.status().message());
      version_ = *row ? static_cast<int>(s.Int(0)) : 0;
    }
    if (version_ > kJobStoreSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat("job store has schema version ", version_,
                                                        ", newer than this autoquantd's ", kJobStoreSchemaVersion,
                                                        "; run a newer autoquantd"));
    }
    // A damaged file fails here, not on the first RPC, and before anything below writes to it: a
    // store that does not check out is reported and left exactly as it was.
    {
      Stmt check(db_, "PRAGMA quick_check");
      if (!check.prepared().ok()) return damaged("failed its integrity check", sqlite3_errmsg(db_));
      auto row = check.Step();
      if (!row.ok()) return damaged("failed its integrity check", row.status().message());
      if (!*row || check.Text(0) != "ok")
        return damaged("failed its integrity check", *row ? check.Text(0) : "no result");
    }
    RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::Status s = Exec(kSchema);
    // Version 1 stores lack the persisted cancel request (version 2), versions 1 and 2 the model a job was
    // submitted against (version 3; their jobs run on whatever model the daemon serves, as before), versions
    // 1 to 3 the blob records (version 4: kSchema creates the table; blobs found before through refs/ in the
    // models root are produced once more, then recorded).
    if (s.ok() && version_ == 1) s = Exec("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0");
    if (s.ok() && version_ >= 1 && version_ < 3) {
      s = Exec("ALTER TABLE jobs ADD COLUMN affinity TEXT NOT NULL DEFAULT ''");
    }
    if (s.ok()) s = Exec(absl::StrCat("PRAGMA user_version=", kJobStoreSchemaVersion));
    if (!s.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return s;
    }
    RETURN_IF_ERROR(Exec("COMMIT"));
    return OpenReader();
  }

  absl::StatusOr<std::vector<Job>> Insert(const std::vector<Job>& jobs, const std::string& first_log,
                                          std::vector<bool>* created) override {
    return InTransaction<std::vector<Job>>([&] { return InsertLocked(jobs, first_log, created); });
  }

  absl::StatusOr<Job> Get(const std::string& id) override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    return GetOn(reader_, id);
  }

  absl::StatusOr<std::optional<Job>> FindByKey(const std::string& key) override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    return FindByKeyOn(reader_, key);
  }

  absl::StatusOr<JobPage> List(const JobListFilter& f) override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    std::string where = "seq > ?1";
    if (!f.states.empty()) {
      std::vector<std::string> names;
      for (JobState s : f.states) names.push_back(absl::StrCat("'", JobStateName(s), "'"));
      absl::StrAppend(&where, " AND state IN (", absl::StrJoin(names, ","), ")");
    }
    const int limit = f.page_size;
    Stmt s(reader_, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE ", where, " ORDER BY seq LIMIT ?2"));
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, f.after_seq).Bind(2, static_cast<int64_t>(limit) + 1);
    JobPage page;
    int rows = 0;
    int64_t last_seq = 0;
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      if (++rows > limit) {
        page.next_after_seq = last_seq;
        break;
      }
      last_seq = s.Int(0);
      absl::StatusOr<Job> j = FromRow(s);
      if (!j.ok()) {
        page.unreadable.push_back(absl::StrCat("job ", s.Text(1), " (seq ", last_seq, "): ", j.status().message()));
        continue;
      }
      page.jobs.push_back(*std::move(j));
    }
    return page;
  }

  // One daemon owns this store: every RUNNING job is its own, so leases are not checked.
  absl::StatusOr<Job> Transition(const std::string& id, JobState to, const std::function<void(Job&)>& mutate,
                                 const std::optional<LogEntry>& log, const Lease* /*lease*/) override {
    return InTransaction<Job>([&] { return TransitionLocked(id, to, mutate, log); });
  }

  absl::Status UpdateProgress(const std::string& id, Phase phase, double progress, const Lease* /*lease*/) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "UPDATE jobs SET phase = ?1, progress = ?2 WHERE id = ?3 AND state = 'running'");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, std::string(PhaseName(phase))).BindDouble(2, progress).Bind(3, id);
    return s.Run();
  }

  absl::Status RequestCancel(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id);
    return s.Run();
  }

  absl::StatusOr<std::optional<Job>> ClaimNext(const std::string& /*affinity*/) override {
    return InTransaction<std::optional<Job>>([&] { return ClaimLocked(); });
  }

  // One write transaction (BEGIN IMMEDIATE waits in the busy timeout for another writer), so that the
  // sequence number read and the line written are one step.
  absl::StatusOr<int64_t> AppendLog(const std::string& id, const LogEntry& e, const Lease* /*lease*/) override {
    return InTransaction<int64_t>([&] { return AppendLogLocked(id, e); });
  }

  absl::StatusOr<std::vector<LogEntry>> ReadLogs(const std::string& id, int64_t after, int limit) override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    Stmt s(reader_,
           "SELECT sequence, time_ms, level, message, phase, progress, state FROM logs "
           "WHERE job_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id).Bind(2, after).Bind(3, static_cast<int64_t>(limit));
    std::vector<LogEntry> out;
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      LogEntry e;
      e.sequence = s.Int(0);
      e.time_ms = s.Int(1);
      e.level = s.Text(2);
      e.message = s.Text(3);
      e.phase = PhaseFromStore(s.Text(4));
      e.progress = s.Double(5);
      if (!s.IsNull(6)) {
        ASSIGN_OR_RETURN(JobState st, ParseJobState(s.Text(6)));
        e.state = st;
      }
      out.push_back(std::move(e));
    }
    return out;
  }

  absl::StatusOr<int> QueuePosition(const std::string& id) override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    ASSIGN_OR_RETURN(Job j, GetOn(reader_, id));
    if (j.state != JobState::kQueued) return 0;
    Stmt s(reader_,
           "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND "
           "(priority > ?1 OR (priority = ?1 AND seq <= ?2))");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, static_cast<int64_t>(j.spec.priority)).Bind(2, j.seq);
    ASSIGN_OR_RETURN(bool row, s.Step());
    return row ? static_cast<int>(s.Int(0)) : 0;
  }

  absl::StatusOr<std::map<JobState, int64_t>> CountByState() override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    Stmt s(reader_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
    RETURN_IF_ERROR(s.prepared());
    std::map<JobState, int64_t> out;
    for (JobState st :
         {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
      out[st] = 0;
    }
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      // A row in no known state is no job (ListJobs skips it too); it must not fail every submit.
      absl::StatusOr<JobState> st = ParseJobState(s.Text(0));
      if (st.ok()) out[*st] = s.Int(1);
    }
    return out;
  }

  absl::StatusOr<std::vector<Job>> RecoverInterrupted(const RecoveryPolicy& policy) override {
    return InTransaction<std::vector<Job>>([&] { return RecoverLocked(policy); });
  }

  double lease_seconds() const override { return 0; }

  absl::StatusOr<bool> Heartbeat(const std::string& id, const Lease& /*lease*/) override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    ASSIGN_OR_RETURN(Job j, GetOn(reader_, id));
    return j.cancel_requested;
  }

  absl::Status WhileLeaseHeld(const std::string& /*id*/, const Lease& /*lease*/,
                              const std::function<absl::Status()>& publish) override {
    return publish();
  }

  absl::StatusOr<std::vector<Job>> RequeueExpired(const RecoveryPolicy& /*policy*/) override {
    return std::vector<Job>();
  }

  absl::StatusOr<std::optional<BlobRecord>> LookupBlob(const std::string& key) override {
    std::lock_guard<std::mutex> lock(reader_mu_);
    Stmt s(reader_, "SELECT id, bytes FROM blobs WHERE key = ?1");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, key);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return std::optional<BlobRecord>();
    return std::optional<BlobRecord>(BlobRecord{s.Text(0), static_cast<uint64_t>(s.Int(1))});
  }

  absl::Status RecordBlob(const std::string& key, const BlobRecord& record) override {
    return InTransaction<bool>([&]() -> absl::StatusOr<bool> {
             Stmt s(db_,
                    "INSERT INTO blobs(key, id, bytes, recorded_ms) VALUES(?1, ?2, ?3, ?4) ON CONFLICT(key) DO "
                    "UPDATE SET id = excluded.id, bytes = excluded.bytes, recorded_ms = excluded.recorded_ms");
             RETURN_IF_ERROR(s.prepared());
             s.Bind(1, key).Bind(2, record.id).Bind(3, static_cast<int64_t>(record.bytes)).Bind(4, NowMs());
             RETURN_IF_ERROR(s.Run());
             return true;
           })
        .status();
  }

  // Rewrites the schema version (unchanged): a real page write, which a full disk refuses.
  absl::Status CheckWritable() override {
    return InTransaction<bool>([&]() -> absl::StatusOr<bool> {
             RETURN_IF_ERROR(Exec(absl::StrCat("PRAGMA user_version=", kJobStoreSchemaVersion)));
             return true;
           })
        .status();
  }

  // Test-only: SQLite answers SQLITE_FULL once the file would grow past `pages`, as a full disk does.
  absl::Status LimitPages(int64_t pages) {
    std::lock_guard<std::mutex> lock(mu_);
    return Exec(absl::StrCat("PRAGMA max_page_count=", pages));
  }

 private:
  // Runs `body` as one write transaction under the connection's lock:
  // committed if it succeeds, rolled back otherwise.
  template <typename T>
  absl::StatusOr<T> InTransaction(const std::function<absl::StatusOr<T>()>& body) {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::StatusOr<T> r = body();
    if (r.ok()) {
      absl::Status committed = Exec("COMMIT");
      if (!committed.ok()) r = committed;
    }
    // A COMMIT that failed (a full disk) leaves the transaction open: end it, or every later BEGIN fails too.
    if (!r.ok() && !sqlite3_get_autocommit(db_)) Exec("ROLLBACK").IgnoreError();
    return r;
  }

  static absl::StatusOr<Job> FromRow(const Stmt& s) {
    Job j;
    j.seq = s.Int(0);
    j.id = s.Text(1);
    j.idempotency_key = s.IsNull(2) ? "" : s.Text(2);
    j.sweep_id = s.Text(3);
    json spec = json::parse(s.Text(4), nullptr, false);
    if (spec.is_discarded()) return absl::DataLossError(absl::StrCat("job ", j.id, ": stored spec is not JSON"));
    ASSIGN_OR_RETURN(j.spec, JobSpec::FromJson(spec));
    absl::StatusOr<JobState> state = ParseJobState(s.Text(5));
    if (!state.ok()) return absl::DataLossError(absl::StrCat("job ", j.id, ": stored ", state.status().message()));
    j.state = *state;
    j.phase = PhaseFromStore(s.Text(6));
    j.progress = s.Double(7);
    j.message = s.Text(8);
    j.created_ms = s.Int(9);
    j.started_ms = s.Int(10);
    j.finished_ms = s.Int(11);
    j.attempts = static_cast<int>(s.Int(12));
    if (!s.IsNull(13)) {
      json r = json::parse(s.Text(13), nullptr, false);
      if (!r.is_discarded()) j.result = JobResultInfo::FromJson(r);
    }
    j.cancel_requested = s.Int(14) != 0;
    j.affinity = s.Text(15);
    return j;
  }

  static absl::StatusOr<Job> GetOn(sqlite3* db, const std::string& id) {
    Stmt s(db, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ?1"));
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'; list jobs to see the known ids"));
    return FromRow(s);
  }

  static absl::StatusOr<std::optional<Job>> FindByKeyOn(sqlite3* db, const std::string& key) {
    Stmt s(db, absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE idempotency_key = ?1"));
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, key);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return std::optional<Job>();
    ASSIGN_OR_RETURN(Job j, FromRow(s));
    return std::optional<Job>(std::move(j));
  }

  absl::Status WriteLocked(const Job& j) {
    Stmt s(db_,
           "UPDATE jobs SET state = ?1, phase = ?2, progress = ?3, message = ?4, started_ms = ?5, "
           "finished_ms = ?6, attempts = ?7, result = ?8, cancel_requested = ?10 WHERE id = ?9");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, std::string(JobStateName(j.state)))
        .Bind(2, StoredPhase(j.phase))
        .BindDouble(3, j.progress)
        .Bind(4, j.message);
    s.Bind(5, j.started_ms).Bind(6, j.finished_ms).Bind(7, static_cast<int64_t>(j.attempts));
    if (j.result) {
      s.Bind(8, j.result->ToJson().dump());
    } else {
      s.BindNull(8);
    }
    s.Bind(9, j.id).Bind(10, static_cast<int64_t>(j.cancel_requested));
    return s.Run();
  }

  absl::StatusOr<std::vector<Job>> InsertLocked(const std::vector<Job>& jobs, const std::string& first_log,
                                                std::vector<bool>* created) {
    std::vector<Job> out;
    std::vector<bool> made;
    for (const Job& in : jobs) {
      if (!in.idempotency_key.empty()) {
        ASSIGN_OR_RETURN(std::optional<Job> existing, FindByKeyOn(db_, in.idempotency_key));
        if (existing) {
          if (!(existing->spec == in.spec)) {
            return absl::AlreadyExistsError(absl::StrCat("idempotency key '", in.idempotency_key,
                                                         "' was already used by job ", existing->id,
                                                         " with a different request; use a new key for a new request"));
          }
          out.push_back(std::move(*existing));
          made.push_back(false);
          continue;
        }
      }
      Stmt s(db_,
             "INSERT INTO jobs(id, idempotency_key, sweep_id, spec, priority, state, created_ms, affinity) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
      RETURN_IF_ERROR(s.prepared());
      s.Bind(1, in.id);
      if (in.idempotency_key.empty()) {
        s.BindNull(2);
      } else {
        s.Bind(2, in.idempotency_key);
      }
      s.Bind(3, in.sweep_id).Bind(4, in.spec.ToJson().dump()).Bind(5, static_cast<int64_t>(in.spec.priority));
      s.Bind(6, std::string(JobStateName(JobState::kQueued))).Bind(7, in.created_ms).Bind(8, in.affinity);
      RETURN_IF_ERROR(s.Run());
      if (!first_log.empty()) {
        LogEntry e;
        e.time_ms = in.created_ms;
        e.level = "info";
        e.message = first_log;
        RETURN_IF_ERROR(AppendLogLocked(in.id, e).status());
      }
      ASSIGN_OR_RETURN(Job stored, GetOn(db_, in.id));
      out.push_back(std::move(stored));
      made.push_back(true);
    }
    if (created) *created = made;
    return out;
  }

  absl::StatusOr<Job> TransitionLocked(const std::string& id, JobState to, const std::function<void(Job&)>& mutate,
                                       const std::optional<LogEntry>& log) {
    ASSIGN_OR_RETURN(Job j, GetOn(db_, id));
    RETURN_IF_ERROR(CheckTransition(j.state, to));
    j.state = to;
    if (mutate) mutate(j);
    j.state = to;  // mutate may not change the state
    if (IsTerminal(to) && j.finished_ms == 0) j.finished_ms = NowMs();
    RETURN_IF_ERROR(WriteLocked(j));
    if (log) {
      LogEntry e = *log;
      if (IsTerminal(to)) e.state = to;
      if (e.time_ms == 0) e.time_ms = NowMs();
      RETURN_IF_ERROR(AppendLogLocked(id, e).status());
    }
    return j;
  }

  absl::StatusOr<std::optional<Job>> ClaimLocked() {
    std::string id;
    while (id.empty()) {
      Stmt s(db_, absl::StrCat("SELECT ", kJobColumns,
                               " FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT 1"));
      RETURN_IF_ERROR(s.prepared());
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) return std::optional<Job>();
      // A row that cannot be read (a hand edit, a bad disk) would be picked again at every look for work
      // and hold up the whole queue behind it: it fails, saying why, and the next job is claimed.
      if (absl::Status readable = FromRow(s).status(); !readable.ok()) {
        RETURN_IF_ERROR(FailUnreadableLocked(s.Text(1), readable));
        continue;
      }
      id = s.Text(1);
    }
    LogEntry e;
    e.level = "info";
    ASSIGN_OR_RETURN(Job j, TransitionLocked(
                                id, JobState::kRunning,
                                [](Job& j) {
                                  j.attempts += 1;
                                  j.started_ms = NowMs();
                                  j.phase.reset();
                                  j.progress = 0;
                                  j.message = "";
                                },
                                std::nullopt));
    e.message = absl::StrCat("started (attempt ", j.attempts, ")");
    e.time_ms = j.started_ms;
    RETURN_IF_ERROR(AppendLogLocked(id, e).status());
    return std::optional<Job>(std::move(j));
  }

  absl::Status FailUnreadableLocked(const std::string& id, const absl::Status& why) {
    const std::string message = absl::StrCat("its stored row cannot be read, so it cannot run: ", why.message());
    Stmt s(db_, "UPDATE jobs SET state = 'failed', message = ?2, finished_ms = ?3 WHERE id = ?1");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id).Bind(2, message).Bind(3, NowMs());
    RETURN_IF_ERROR(s.Run());
    LogEntry e;
    e.level = "error";
    e.message = message;
    e.state = JobState::kFailed;
    return AppendLogLocked(id, e).status();
  }

  absl::StatusOr<int64_t> AppendLogLocked(const std::string& id, const LogEntry& e) {
    int64_t seq = 1;
    {
      // Finalized before the INSERT: a statement left open holds a read snapshot, and a connection
      // reading a snapshot cannot wait for another's write lock (SQLite answers BUSY at once).
      Stmt next(db_, "SELECT COALESCE(MAX(sequence), 0) + 1 FROM logs WHERE job_id = ?1");
      RETURN_IF_ERROR(next.prepared());
      next.Bind(1, id);
      ASSIGN_OR_RETURN(bool row, next.Step());
      if (row) seq = next.Int(0);
    }
    Stmt s(db_,
           "INSERT INTO logs(job_id, sequence, time_ms, level, message, phase, progress, state) "
           "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    RETURN_IF_ERROR(s.prepared());
    s.Bind(1, id).Bind(2, seq).Bind(3, e.time_ms ? e.time_ms : NowMs()).Bind(4, e.level.empty() ? "info" : e.level);
    s.Bind(5, e.message).Bind(6, StoredPhase(e.phase)).BindDouble(7, e.progress);
    if (e.state) {
      s.Bind(8, std::string(JobStateName(*e.state)));
    } else {
      s.BindNull(8);
    }
    RETURN_IF_ERROR(s.Run());
    return seq;
  }

  absl::StatusOr<std::vector<Job>> RecoverLocked(const RecoveryPolicy& policy) {
    std::vector<std::string> ids;
    {
      Stmt s(db_, "SELECT id FROM jobs WHERE state = 'running' ORDER BY seq");
      RETURN_IF_ERROR(s.prepared());
      while (true) {
        ASSIGN_OR_RETURN(bool row, s.Step());
        if (!row) break;
        ids.push_back(s.Text(0));
      }
    }
    std::vector<Job> changed;
    for (const auto& id : ids) {
      ASSIGN_OR_RETURN(Job j, GetOn(db_, id));
      const Recovery r = policy(j, Interruption{});
      ASSIGN_OR_RETURN(Job moved, TransitionLocked(
                                      id, r.to, [&](Job& j) { ApplyRecovery(r, j); }, r.log));
      changed.push_back(std::move(moved));
    }
    return changed;
  }

  // The second connection, for reads only. In WAL mode a reader never waits for a writer, so
  // GetStatus, ListJobs and StreamLogs answer while a write waits in the busy timeout (another
  // process holding the write lock, a slow fsync) instead of queueing behind it on `mu_`.
  absl::Status OpenReader() {
    const char* file = sqlite3_db_filename(db_, "main");
    const int rc = sqlite3_open_v2(file ? file : "", &reader_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      return absl::UnavailableError(absl::StrCat("cannot open a second connection to the job store: ",
                                                 reader_ ? sqlite3_errmsg(reader_) : "out of memory"));
    }
    sqlite3_busy_timeout(reader_, 10000);
    const int q = sqlite3_exec(reader_, "PRAGMA query_only=1", nullptr, nullptr, nullptr);
    return q == SQLITE_OK ? absl::OkStatus() : SqliteError(reader_, q, "");
  }

  std::mutex mu_;  // the writing connection, db_
  sqlite3* db_;
  std::mutex reader_mu_;  // the reading connection, reader_
  sqlite3* reader_ = nullptr;
  int version_ = 0;
};

}  // namespace

namespace {

absl::StatusOr<std::unique_ptr<SqliteJobStore>> OpenAndInit(const std::filesystem::path& path, int flags) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return absl::UnavailableError(absl::StrCat("cannot open job store ", path.string(), ": ", msg));
  }
  auto store = std::make_unique<SqliteJobStore>(db);
  absl::Status s = store->Init();
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(path.string(), ": ", s.message()));
  return store;
}

// SQLite takes an empty file for an empty database, so a store truncated to
// nothing (or any file that is not a database) would silently become a fresh
// store and every job in it be forgotten. An existing file must start with
// SQLite's header; a store this process makes appears whole (below), so an
// empty file at the path is never ours.
absl::Status CheckIsDatabase(const std::filesystem::path& path) {
  static constexpr char kMagic[] = "SQLite format 3";  // 16 bytes with its NUL
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, "cannot open the job store", path);
  char header[sizeof(kMagic)] = {};
  const ssize_t n = ::pread(fd, header, sizeof(header), 0);
  const int err = errno;
  ::close(fd);
  if (n < 0) return ErrnoStatus(err, "cannot read the job store", path);
  const std::string fix = "; move it aside (a missing file is created as a new store) or point --store elsewhere";
  if (n == 0) {
    return absl::DataLossError(
        absl::StrCat("job store ", path.string(), " is an empty file (0 bytes), not a job store", fix));
  }
  if (n < static_cast<ssize_t>(sizeof(header)) || std::memcmp(header, kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(absl::StrCat("job store ", path.string(),
                                            " is not a readable SQLite database (it lacks SQLite's header)", fix));
  }
  return absl::OkStatus();
}

// Makes a new store under a temporary name, then links it into place, so that
// a crash while creating it leaves no empty or schema-less file at `path`.
// Another process that created it first wins; its store is used.
absl::Status CreateStore(const std::filesystem::path& path) {
  const std::filesystem::path tmp = TempFilePath(path);
  {
    ASSIGN_OR_RETURN(auto store, OpenAndInit(tmp, SQLITE_OPEN_CREATE));
  }  // closed: checkpointed into the main file, its WAL removed
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int err = errno;
  std::error_code ec;
  std::filesystem::remove(tmp, ec);
  if (rc != 0 && err != EEXIST) return ErrnoStatus(err, "cannot create the job store", path);
  return FsyncDir(path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path());
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::filesystem::path& path,
                                                             int64_t max_pages_for_test) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (!std::filesystem::exists(path, ec)) RETURN_IF_ERROR(CreateStore(path));
  RETURN_IF_ERROR(CheckIsDatabase(path));
  ASSIGN_OR_RETURN(auto store, OpenAndInit(path, 0));
  if (max_pages_for_test > 0) RETURN_IF_ERROR(store->LimitPages(max_pages_for_test));
  return std::unique_ptr<JobStore>(std::move(store));
}

absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(const std::string& url, const JobStoreOptions& options) {
  if (absl::StartsWith(url, "sqlite:")) {
    std::string path = url.substr(7);
    if (path.empty()) return absl::InvalidArgumentError("--store sqlite: needs a path, e.g. sqlite:/models/jobs.db");
    return OpenSqliteJobStore(path);
  }
  if (absl::StartsWith(url, "postgresql://") || absl::StartsWith(url, "postgres://")) {
    return OpenPostgresJobStore(url, options);
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported --store '", url,
                                                 "': use sqlite:PATH (one daemon) or postgresql://USER@HOST:PORT/DB "
                                                 "(a fleet of daemons sharing one job table)"));
}

}  // namespace autoquant
