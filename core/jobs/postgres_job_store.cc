#include "core/jobs/postgres_job_store.h"

#include <algorithm>
#include <mutex>
#include <pqxx/pqxx>
#include <regex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/util/status_macros.h"

namespace autoquant {
namespace {
using json = nlohmann::json;

// Serializes schema creation and migration between daemons starting at once.
constexpr int64_t kSchemaLockKey = 0x6175746f71756e74;  // "autoqunt"

constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE autoquant_jobs(
  seq bigserial PRIMARY KEY,
  id text NOT NULL UNIQUE,
  idempotency_key text UNIQUE,
  sweep_id text NOT NULL DEFAULT '',
  spec text NOT NULL,
  priority integer NOT NULL DEFAULT 0,
  affinity text NOT NULL DEFAULT '',
  state text NOT NULL,
  phase text NOT NULL DEFAULT '',
  progress double precision NOT NULL DEFAULT 0,
  message text NOT NULL DEFAULT '',
  created_ms bigint NOT NULL DEFAULT 0,
  started_ms bigint NOT NULL DEFAULT 0,
  finished_ms bigint NOT NULL DEFAULT 0,
  attempts integer NOT NULL DEFAULT 0,
  result text,
  cancel_requested boolean NOT NULL DEFAULT false,
  owner text NOT NULL DEFAULT '',
  lease_epoch bigint NOT NULL DEFAULT 0,
  lease_expires timestamptz,
  log_seq bigint NOT NULL DEFAULT 0
);
CREATE INDEX autoquant_jobs_run_order ON autoquant_jobs(state, priority DESC, seq);
CREATE INDEX autoquant_jobs_leases ON autoquant_jobs(lease_expires) WHERE state = 'running';
CREATE TABLE autoquant_job_logs(
  job_id text NOT NULL REFERENCES autoquant_jobs(id),
  sequence bigint NOT NULL,
  time_ms bigint NOT NULL,
  level text NOT NULL,
  message text NOT NULL,
  phase text NOT NULL DEFAULT '',
  progress double precision NOT NULL DEFAULT 0,
  state text,
  PRIMARY KEY(job_id, sequence)
);
)sql";

// Version 2: the records of the blobs the daemons produced (blob_records.h).
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE autoquant_blobs(
  key text PRIMARY KEY,
  id text NOT NULL,
  bytes bigint NOT NULL,
  recorded_ms bigint NOT NULL DEFAULT 0
);
)sql";

constexpr const char* kJobColumns =
    "seq, id, COALESCE(idempotency_key, '') AS idempotency_key, sweep_id, spec, state, phase, progress, message, "
    "created_ms, started_ms, finished_ms, attempts, result, cancel_requested, affinity, owner, lease_epoch, "
    "COALESCE((extract(epoch FROM lease_expires) * 1000)::bigint, 0) AS lease_expires_ms";

// The fence every write of a running job's owner carries ($2 owner, $3 epoch).
constexpr const char* kFence = "state = 'running' AND owner = $2 AND lease_epoch = $3";

std::string StateText(JobState s) { return std::string(JobStateName(s)); }

absl::StatusOr<Job> FromRow(const pqxx::row& r) {
  Job j;
  j.seq = r["seq"].as<int64_t>();
  j.id = r["id"].as<std::string>();
  j.idempotency_key = r["idempotency_key"].as<std::string>();
  j.sweep_id = r["sweep_id"].as<std::string>();
  json spec = json::parse(r["spec"].as<std::string>(), nullptr, false);
  if (spec.is_discarded()) return absl::DataLossError(absl::StrCat("job ", j.id, ": stored spec is not JSON"));
  ASSIGN_OR_RETURN(j.spec, JobSpec::FromJson(spec));
  absl::StatusOr<JobState> state = ParseJobState(r["state"].as<std::string>());
  if (!state.ok()) return absl::DataLossError(absl::StrCat("job ", j.id, ": stored ", state.status().message()));
  j.state = *state;
  j.phase = PhaseFromStore(r["phase"].as<std::string>());
  j.progress = r["progress"].as<double>();
  j.message = r["message"].as<std::string>();
  j.created_ms = r["created_ms"].as<int64_t>();
  j.started_ms = r["started_ms"].as<int64_t>();
  j.finished_ms = r["finished_ms"].as<int64_t>();
  j.attempts = r["attempts"].as<int>();
  if (!r["result"].is_null()) {
    json res = json::parse(r["result"].as<std::string>(), nullptr, false);
    if (!res.is_discarded()) j.result = JobResultInfo::FromJson(res);
  }
  j.cancel_requested = r["cancel_requested"].as<bool>();
  j.affinity = r["affinity"].as<std::string>();
  j.owner = r["owner"].as<std::string>();
  j.lease_epoch = r["lease_epoch"].as<int64_t>();
  j.lease_expires_ms = r["lease_expires_ms"].as<int64_t>();
  return j;
}

// Thrown inside a call's body to leave it with a Status (the transaction
// object then rolls back); never escapes this file.
struct StatusException {
  absl::Status status;
};

class PostgresJobStore : public JobStore {
 public:
  // `url` is what connects; messages name the store as the user gave it (`given`, redacted).
  PostgresJobStore(std::string url, const std::string& given, JobStoreOptions options)
      : url_(std::move(url)), redacted_(RedactedStoreUrl(given)), options_(std::move(options)) {}

  absl::Status Init() {
    return Call<bool>(
               "creating the schema", /*retry=*/true,
               [&](pqxx::connection& c) -> absl::StatusOr<bool> {
                 pqxx::work w(c);
                 w.exec_params("SELECT pg_advisory_xact_lock($1)", kSchemaLockKey);
                 w.exec("CREATE TABLE IF NOT EXISTS autoquant_schema(version integer NOT NULL)");
                 pqxx::result v = w.exec("SELECT max(version) FROM autoquant_schema");
                 const int version = v[0][0].is_null() ? 0 : v[0][0].as<int>();
                 if (version > kPostgresSchemaVersion) {
                   return absl::FailedPreconditionError(absl::StrCat(
                       "the job store ", redacted_, " has schema version ", version, ", newer than this autoquantd's ",
                       kPostgresSchemaVersion, "; run the same autoquantd version on every daemon of the fleet"));
                 }
                 // Each version's migration from the one before it.
                 if (version < 1) w.exec(kSchemaV1);
                 if (version < 2) w.exec(kSchemaV2);
                 if (version < kPostgresSchemaVersion) {
                   w.exec_params("INSERT INTO autoquant_schema(version) VALUES($1)", kPostgresSchemaVersion);
                 }
                 w.commit();
                 return true;
               })
        .status();
  }

  absl::StatusOr<std::vector<Job>> Insert(const std::vector<Job>& jobs, const std::string& first_log,
                                          std::vector<bool>* created) override {
    return Call<std::vector<Job>>("storing jobs", true, [&](pqxx::connection& c) -> absl::StatusOr<std::vector<Job>> {
      pqxx::work w(c);
      std::vector<Job> out;
      std::vector<bool> made;
      for (const Job& in : jobs) {
        // ON CONFLICT waits for a racing insert of the same key (another daemon's) to commit, then
        // inserts nothing: the key is unique across the fleet.
        pqxx::result r = w.exec_params(
            "INSERT INTO autoquant_jobs(id, idempotency_key, sweep_id, spec, priority, affinity, state, created_ms) "
            "VALUES($1, NULLIF($2, ''), $3, $4, $5, $6, 'queued', $7) ON CONFLICT (idempotency_key) DO NOTHING "
            "RETURNING id",
            in.id, in.idempotency_key, in.sweep_id, in.spec.ToJson().dump(), in.spec.priority, in.affinity,
            in.created_ms);
        if (r.empty()) {
          ASSIGN_OR_RETURN(Job existing, GetWhere(w, "idempotency_key", in.idempotency_key));
          if (!(existing.spec == in.spec)) {
            return absl::AlreadyExistsError(absl::StrCat("idempotency key '", in.idempotency_key,
                                                         "' was already used by job ", existing.id,
                                                         " with a different request; use a new key for a new request"));
          }
          out.push_back(std::move(existing));
          made.push_back(false);
          continue;
        }
        if (!first_log.empty()) {
          LogEntry e;
          e.time_ms = in.created_ms;
          e.level = "info";
          e.message = first_log;
          ASSIGN_OR_RETURN(int64_t seq, AppendLogTx(w, in.id, e, nullptr));
          (void)seq;
        }
        ASSIGN_OR_RETURN(Job stored, GetWhere(w, "id", in.id));
        out.push_back(std::move(stored));
        made.push_back(true);
      }
      w.commit();
      if (created) *created = made;
      return out;
    });
  }

  absl::StatusOr<Job> Get(const std::string& id) override {
    return Call<Job>("reading a job", true, [&](pqxx::connection& c) -> absl::StatusOr<Job> {
      pqxx::read_transaction t(c);
      return GetWhere(t, "id", id);
    });
  }

  absl::StatusOr<std::optional<Job>> FindByKey(const std::string& key) override {
    return Call<std::optional<Job>>("reading a job by idempotency key", true,
                                    [&](pqxx::connection& c) -> absl::StatusOr<std::optional<Job>> {
                                      pqxx::read_transaction t(c);
                                      absl::StatusOr<Job> j = GetWhere(t, "idempotency_key", key);
                                      if (absl::IsNotFound(j.status())) return std::optional<Job>();
                                      if (!j.ok()) return j.status();
                                      return std::optional<Job>(*std::move(j));
                                    });
  }

  absl::StatusOr<JobPage> List(const JobListFilter& f) override {
    std::string where = "seq > $1";
    if (!f.states.empty()) {
      std::vector<std::string> names;
      for (JobState s : f.states) names.push_back(absl::StrCat("'", JobStateName(s), "'"));
      absl::StrAppend(&where, " AND state IN (", absl::StrJoin(names, ","), ")");
    }
    return Call<JobPage>("listing jobs", true, [&](pqxx::connection& c) -> absl::StatusOr<JobPage> {
      pqxx::read_transaction t(c);
      pqxx::result r = t.exec_params(
          absl::StrCat("SELECT ", kJobColumns, " FROM autoquant_jobs WHERE ", where, " ORDER BY seq LIMIT $2"),
          f.after_seq, static_cast<int64_t>(f.page_size) + 1);
      JobPage page;
      int rows = 0;
      int64_t last_seq = 0;
      for (const auto& row : r) {
        if (++rows > f.page_size) {
          page.next_after_seq = last_seq;
          break;
        }
        last_seq = row["seq"].as<int64_t>();
        absl::StatusOr<Job> j = FromRow(row);
        if (!j.ok()) {
          page.unreadable.push_back(
              absl::StrCat("job ", row["id"].as<std::string>(), " (seq ", last_seq, "): ", j.status().message()));
          continue;
        }
        page.jobs.push_back(*std::move(j));
      }
      return page;
    });
  }

  absl::StatusOr<Job> Transition(const std::string& id, JobState to, const std::function<void(Job&)>& mutate,
                                 const std::optional<LogEntry>& log, const Lease* lease) override {
    return Call<Job>("changing a job's state", true, [&](pqxx::connection& c) -> absl::StatusOr<Job> {
      pqxx::work w(c);
      ASSIGN_OR_RETURN(Job j, TransitionTx(w, id, to, mutate, log, lease));
      w.commit();
      return j;
    });
  }

  absl::Status RequestCancel(const std::string& id) override {
    return Call<bool>("requesting a cancel", true,
                      [&](pqxx::connection& c) -> absl::StatusOr<bool> {
                        pqxx::work w(c);
                        w.exec_params(
                            "UPDATE autoquant_jobs SET cancel_requested = true WHERE id = $1 AND state = 'running'",
                            id);
                        w.commit();
                        return true;
                      })
        .status();
  }

  // Rewrites the schema row unchanged: a real write, refused while the server is down or its disk full.
  absl::Status CheckWritable() override {
    return Call<bool>("checking that it takes writes", true,
                      [&](pqxx::connection& c) -> absl::StatusOr<bool> {
                        pqxx::work w(c);
                        w.exec("UPDATE autoquant_schema SET version = version");
                        w.commit();
                        return true;
                      })
        .status();
  }

  absl::Status UpdateProgress(const std::string& id, Phase phase, double progress, const Lease* lease) override {
    return Call<bool>("recording progress", true,
                      [&](pqxx::connection& c) -> absl::StatusOr<bool> {
                        pqxx::work w(c);
                        if (lease == nullptr) {
                          w.exec_params(
                              "UPDATE autoquant_jobs SET phase = $2, progress = $3 WHERE id = $1 AND state = 'running'",
                              id, std::string(PhaseName(phase)), progress);
                        } else {
                          pqxx::result r =
                              w.exec_params(absl::StrCat("UPDATE autoquant_jobs SET phase = $4, progress = $5 "
                                                         "WHERE id = $1 AND ",
                                                         kFence, " RETURNING id"),
                                            id, lease->owner, lease->epoch, std::string(PhaseName(phase)), progress);
                          if (r.empty()) return LeaseLost(w, id, *lease);
                        }
                        w.commit();
                        return true;
                      })
        .status();
  }

  absl::StatusOr<std::optional<Job>> ClaimNext(const std::string& affinity) override {
    return Call<
        std::optional<Job>>("claiming a job", true, [&](pqxx::connection& c) -> absl::StatusOr<std::optional<Job>> {
      // SKIP LOCKED: a row another daemon is claiming (or cancelling) right now is passed over, so
      // two claims never return one job and never wait for each other.
      while (true) {
        pqxx::work w(c);
        pqxx::result r = w.exec_params(
            "WITH next AS (SELECT seq FROM autoquant_jobs WHERE state = 'queued' AND (affinity = $1 OR affinity = '') "
            "ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "UPDATE autoquant_jobs j SET state = 'running', owner = $2, lease_epoch = j.lease_epoch + 1, "
            "lease_expires = clock_timestamp() + make_interval(secs => $3), attempts = j.attempts + 1, "
            "started_ms = $4, phase = '', progress = 0, message = '' FROM next WHERE j.seq = next.seq RETURNING j.id",
            affinity, options_.owner, options_.lease_seconds, NowMs());
        if (r.empty()) return std::optional<Job>();
        const std::string id = r[0][0].as<std::string>();
        absl::StatusOr<Job> j = GetWhere(w, "id", id);
        if (!j.ok()) {
          // A row no daemon can read (a hand edit, a bad disk) would be claimed again at every look for
          // work and hold up the whole queue behind it: it fails, saying why, and the next job is claimed.
          const std::string why =
              absl::StrCat("its stored row cannot be read, so it cannot run: ", j.status().message());
          w.exec_params(
              "UPDATE autoquant_jobs SET state = 'failed', message = $2, finished_ms = $3, lease_expires = NULL "
              "WHERE id = $1",
              id, why, NowMs());
          LogEntry e;
          e.level = "error";
          e.message = why;
          e.state = JobState::kFailed;
          RETURN_IF_ERROR(AppendLogTx(w, id, e, nullptr).status());
          w.commit();
          continue;
        }
        LogEntry e;
        e.level = "info";
        e.time_ms = j->started_ms;
        e.message = absl::StrCat("started (attempt ", j->attempts, ") on daemon ", options_.owner);
        RETURN_IF_ERROR(AppendLogTx(w, id, e, nullptr).status());
        w.commit();
        return std::optional<Job>(*std::move(j));
      }
    });
  }

  absl::StatusOr<int64_t> AppendLog(const std::string& id, const LogEntry& e, const Lease* lease) override {
    return Call<int64_t>("appending a log line", true, [&](pqxx::connection& c) -> absl::StatusOr<int64_t> {
      pqxx::work w(c);
      ASSIGN_OR_RETURN(int64_t seq, AppendLogTx(w, id, e, lease));
      w.commit();
      return seq;
    });
  }

  absl::StatusOr<std::vector<LogEntry>> ReadLogs(const std::string& id, int64_t after, int limit) override {
    return Call<std::vector<LogEntry>>(
        "reading a job's log", true, [&](pqxx::connection& c) -> absl::StatusOr<std::vector<LogEntry>> {
          pqxx::read_transaction t(c);
          pqxx::result r = t.exec_params(
              "SELECT sequence, time_ms, level, message, phase, progress, state FROM autoquant_job_logs "
              "WHERE job_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
              id, after, static_cast<int64_t>(limit));
          std::vector<LogEntry> out;
          for (const auto& row : r) {
            LogEntry e;
            e.sequence = row[0].as<int64_t>();
            e.time_ms = row[1].as<int64_t>();
            e.level = row[2].as<std::string>();
            e.message = row[3].as<std::string>();
            e.phase = PhaseFromStore(row[4].as<std::string>());
            e.progress = row[5].as<double>();
            if (!row[6].is_null()) {
              ASSIGN_OR_RETURN(JobState st, ParseJobState(row[6].as<std::string>()));
              e.state = st;
            }
            out.push_back(std::move(e));
          }
          return out;
        });
  }

  absl::StatusOr<int> QueuePosition(const std::string& id) override {
    return Call<int>("reading a queue position", true, [&](pqxx::connection& c) -> absl::StatusOr<int> {
      pqxx::read_transaction t(c);
      ASSIGN_OR_RETURN(Job j, GetWhere(t, "id", id));
      if (j.state != JobState::kQueued) return 0;
      pqxx::result r = t.exec_params(
          "SELECT count(*) FROM autoquant_jobs WHERE state = 'queued' AND "
          "(priority > $1 OR (priority = $1 AND seq <= $2))",
          j.spec.priority, j.seq);
      return r[0][0].as<int>();
    });
  }

  absl::StatusOr<std::map<JobState, int64_t>> CountByState() override {
    return Call<std::map<JobState, int64_t>>(
        "counting jobs", true, [&](pqxx::connection& c) -> absl::StatusOr<std::map<JobState, int64_t>> {
          pqxx::read_transaction t(c);
          pqxx::result r = t.exec("SELECT state, count(*) FROM autoquant_jobs GROUP BY state");
          std::map<JobState, int64_t> out;
          for (JobState st :
               {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
            out[st] = 0;
          }
          for (const auto& row : r) {
            // A row in no known state is no job (ListJobs skips it too); it must not fail every submit.
            absl::StatusOr<JobState> st = ParseJobState(row[0].as<std::string>());
            if (st.ok()) out[*st] = row[1].as<int64_t>();
          }
          return out;
        });
  }

  // Other daemons' RUNNING jobs are alive as long as their leases are: only expired ones are taken back.
  absl::StatusOr<std::vector<Job>> RecoverInterrupted(const RecoveryPolicy& policy) override {
    return RequeueExpired(policy);
  }

  double lease_seconds() const override { return options_.lease_seconds; }

  absl::StatusOr<bool> Heartbeat(const std::string& id, const Lease& lease) override {
    return Call<bool>("renewing a lease", true, [&](pqxx::connection& c) -> absl::StatusOr<bool> {
      pqxx::work w(c);
      ASSIGN_OR_RETURN(bool cancel, RenewTx(w, id, lease));
      w.commit();
      return cancel;
    });
  }

  absl::Status WhileLeaseHeld(const std::string& id, const Lease& lease,
                              const std::function<absl::Status()>& publish) override {
    // First a renewal of its own, committed: the lease then has a full term left, so even a
    // connection lost in the middle of the rename below cannot let another daemon take the job
    // before the rename is long done.
    RETURN_IF_ERROR(Heartbeat(id, lease).status());
    bool published = false;
    absl::StatusOr<bool> r = Call<bool>(
        "publishing under the job's lease", /*retry=*/false, [&](pqxx::connection& c) -> absl::StatusOr<bool> {
          pqxx::work w(c);
          // This transaction must not be ended by the server while the daemon is between its check and
          // its rename (however long it is paused there): that would free the row for a take-over and
          // let the rename land after the new owner's publish. A daemon paused exactly here keeps its
          // job until it resumes or dies; correctness over liveness, for a window of microseconds.
          w.exec("SET LOCAL idle_in_transaction_session_timeout = 0");
          // The row lock is what a re-queue needs too, so it waits until the rename is done; the
          // lease must still run, by the database's clock.
          pqxx::result r = w.exec_params(absl::StrCat("SELECT id FROM autoquant_jobs WHERE id = $1 AND ", kFence,
                                                      " AND lease_expires > clock_timestamp() FOR UPDATE"),
                                         id, lease.owner, lease.epoch);
          if (r.empty()) return LeaseLost(w, id, lease);
          absl::Status s = publish();
          published = s.ok();
          if (!s.ok()) return s;
          w.commit();
          return true;
        });
    // The rename happened while the row was locked; a failed commit afterwards (the connection lost)
    // changes nothing the lock protected, so the publish stands.
    if (!r.ok() && published) return absl::OkStatus();
    return r.status();
  }

  absl::StatusOr<std::optional<BlobRecord>> LookupBlob(const std::string& key) override {
    return Call<std::optional<BlobRecord>>(
        "reading a blob record", true, [&](pqxx::connection& c) -> absl::StatusOr<std::optional<BlobRecord>> {
          pqxx::read_transaction t(c);
          pqxx::result r = t.exec_params("SELECT id, bytes FROM autoquant_blobs WHERE key = $1", key);
          if (r.empty()) return std::optional<BlobRecord>();
          return std::optional<BlobRecord>(
              BlobRecord{r[0][0].as<std::string>(), static_cast<uint64_t>(r[0][1].as<int64_t>())});
        });
  }

  absl::Status RecordBlob(const std::string& key, const BlobRecord& record) override {
    return Call<bool>(
               "recording a blob", true,
               [&](pqxx::connection& c) -> absl::StatusOr<bool> {
                 pqxx::work w(c);
                 w.exec_params(
                     "INSERT INTO autoquant_blobs(key, id, bytes, recorded_ms) VALUES($1, $2, $3, $4) ON CONFLICT "
                     "(key) "
                     "DO UPDATE SET id = EXCLUDED.id, bytes = EXCLUDED.bytes, recorded_ms = EXCLUDED.recorded_ms",
                     key, record.id, static_cast<int64_t>(record.bytes), NowMs());
                 w.commit();
                 return true;
               })
        .status();
  }

  absl::StatusOr<std::vector<Job>> RequeueExpired(const RecoveryPolicy& policy) override {
    return Call<std::vector<Job>>(
        "re-queueing expired leases", true, [&](pqxx::connection& c) -> absl::StatusOr<std::vector<Job>> {
          pqxx::work w(c);
          // SKIP LOCKED: a job whose owner is publishing right now (its row locked) is not taken from it;
          // the next sweep looks again.
          pqxx::result r = w.exec(
              "SELECT id, EXTRACT(epoch FROM clock_timestamp() - lease_expires)::double precision FROM autoquant_jobs "
              "WHERE state = 'running' AND lease_expires < clock_timestamp() ORDER BY seq FOR UPDATE SKIP LOCKED");
          std::vector<Job> changed;
          for (const auto& row : r) {
            const std::string id = row[0].as<std::string>();
            const double late = row[1].as<double>();
            ASSIGN_OR_RETURN(Job j, GetWhere(w, "id", id));
            const Recovery r = policy(j, Interruption{.lease_expired_seconds_ago = late});
            ASSIGN_OR_RETURN(Job moved, TransitionTx(
                                            w, id, r.to, [&](Job& j) { ApplyRecovery(r, j); }, r.log, nullptr));
            changed.push_back(std::move(moved));
          }
          w.commit();
          return changed;
        });
  }

 private:
  // --- connections ---

  absl::StatusOr<std::unique_ptr<pqxx::connection>> Connect() {
    auto c = std::make_unique<pqxx::connection>(url_);
    pqxx::nontransaction n(*c);
    // lock_timeout: an RPC never hangs behind a lock held by a stopped daemon. Keepalives: the
    // server notices a dead host (and frees its locks) within about 25 s instead of hours.
    // idle_in_transaction_session_timeout: a daemon paused in the middle of one of its short
    // transactions (a heartbeat, a log line) would otherwise keep its job's row locked for as long as
    // it stays paused, and the row lock is what a take-over needs; after one lease term the server
    // ends that session instead. (The publish gate alone lifts it: see WhileLeaseHeld.)
    const int64_t idle_ms = std::max<int64_t>(1000, static_cast<int64_t>(options_.lease_seconds * 1000));
    n.exec(
        absl::StrCat("SET lock_timeout = '5s'; SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
                     "SET tcp_keepalives_count = 3; SET idle_in_transaction_session_timeout = ",
                     idle_ms, "; SET application_name = ", n.quote(absl::StrCat("autoquantd ", options_.owner))));
    return c;
  }

  std::unique_ptr<pqxx::connection> TakeIdle() {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (idle_.empty()) return nullptr;
    auto c = std::move(idle_.back());
    idle_.pop_back();
    return c;
  }

  void GiveBack(std::unique_ptr<pqxx::connection> c) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (idle_.size() < kMaxIdle) idle_.push_back(std::move(c));
  }

  // Runs `body` on a pooled connection and turns libpqxx's exceptions into a
  // Status. A broken connection is dropped; with `retry`, a body that failed
  // on a pooled connection that turned out broken (the server restarted
  // since) runs once more on a fresh one: its transaction never committed.
  template <typename T>
  absl::StatusOr<T> Call(const char* what, bool retry,
                         const std::function<absl::StatusOr<T>(pqxx::connection&)>& body) {
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<pqxx::connection> c = TakeIdle();
      const bool pooled = c != nullptr;
      try {
        if (!c) {
          ASSIGN_OR_RETURN(c, Connect());
        }
        absl::StatusOr<T> r = body(*c);
        GiveBack(std::move(c));
        return r;
      } catch (const pqxx::in_doubt_error& e) {
        return absl::UnavailableError(absl::StrCat("job store ", redacted_, ": ", what,
                                                   ": the connection broke while committing, so it is unknown "
                                                   "whether it took effect: ",
                                                   e.what()));
      } catch (const pqxx::broken_connection& e) {
        if (retry && pooled && attempt == 0) continue;
        return absl::UnavailableError(absl::StrCat("job store ", redacted_, ": ", what, ": cannot reach PostgreSQL (",
                                                   Trim(e.what()),
                                                   "); check that the server is up and --store is right"));
      } catch (const pqxx::sql_error& e) {
        const std::string state = e.sqlstate();
        // Keep the connection: a failed statement leaves it usable once its transaction is gone.
        if (c && c->is_open()) GiveBack(std::move(c));
        if (state == "53100") {  // disk_full: retried once space returns, as with SQLite
          return absl::ResourceExhaustedError(absl::StrCat("job store ", redacted_, ": ", what,
                                                           ": the disk holding the database is full: free space "
                                                           "and retry (",
                                                           Trim(e.what()), ")"));
        }
        if (state == "55P03") {  // lock_not_available: lock_timeout passed
          return absl::UnavailableError(absl::StrCat("job store ", redacted_, ": ", what,
                                                     ": the job is locked by another daemon (publishing, or "
                                                     "stopped while it held the lock); retry"));
        }
        return absl::InternalError(
            absl::StrCat("job store ", redacted_, ": ", what, ": SQLSTATE ", state, ": ", Trim(e.what())));
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("job store ", redacted_, ": ", what, ": ", Trim(e.what())));
      }
    }
  }

  static std::string Trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  // --- statements inside a caller's transaction ---

  // The job whose `column` is `value` (id or idempotency_key).
  template <typename Txn>
  absl::StatusOr<Job> GetWhere(Txn& t, const std::string& column, const std::string& value) {
    pqxx::result r =
        t.exec_params(absl::StrCat("SELECT ", kJobColumns, " FROM autoquant_jobs WHERE ", column, " = $1"), value);
    if (r.empty()) {
      return absl::NotFoundError(absl::StrCat("no job with ", column == "id" ? "id" : "idempotency key", " '", value,
                                              "'; list jobs to see the known ids"));
    }
    return FromRow(r[0]);
  }

  // Aborted, saying who holds the job now: the answer to any fenced write whose fence failed.
  absl::Status LeaseLost(pqxx::work& w, const std::string& id, const Lease& lease) {
    pqxx::result r = w.exec_params(
        "SELECT state, owner, lease_epoch, lease_expires < clock_timestamp() FROM autoquant_jobs WHERE id = $1", id);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
    const std::string state = r[0][0].as<std::string>();
    const std::string owner = r[0][1].as<std::string>();
    const int64_t epoch = r[0][2].as<int64_t>();
    const bool expired = !r[0][3].is_null() && r[0][3].as<bool>();
    std::string now;
    if (state == "running" && owner == lease.owner && epoch == lease.epoch) {
      now = expired ? "still ours, but the lease ran out (no heartbeat in time); it may be re-queued any moment"
                    : "still ours";
    } else {
      now = absl::StrCat("now ", state, " (last claimed by daemon ", owner, ", claim ", epoch, ")");
    }
    return absl::AbortedError(absl::StrCat("lease lost on job ", id, ": this daemon (", lease.owner, ", claim ",
                                           lease.epoch, ") no longer holds it; the job is ", now,
                                           ". Its work here is discarded and nothing more is written for it"));
  }

  absl::StatusOr<bool> RenewTx(pqxx::work& w, const std::string& id, const Lease& lease) {
    pqxx::result r = w.exec_params(
        absl::StrCat("UPDATE autoquant_jobs SET lease_expires = clock_timestamp() + make_interval(secs => $4) "
                     "WHERE id = $1 AND ",
                     kFence, " RETURNING cancel_requested"),
        id, lease.owner, lease.epoch, options_.lease_seconds);
    if (r.empty()) return LeaseLost(w, id, lease);
    return r[0][0].as<bool>();
  }

  absl::StatusOr<int64_t> AppendLogTx(pqxx::work& w, const std::string& id, const LogEntry& e, const Lease* lease) {
    // The per-job counter lives in the job's row: the UPDATE locks it, so lines from several
    // daemons (the owner's progress, another's "cancel requested") get distinct, ordered numbers.
    pqxx::result r =
        lease == nullptr
            ? w.exec_params("UPDATE autoquant_jobs SET log_seq = log_seq + 1 WHERE id = $1 RETURNING log_seq", id)
            : w.exec_params(absl::StrCat("UPDATE autoquant_jobs SET log_seq = log_seq + 1 WHERE id = $1 AND ", kFence,
                                         " RETURNING log_seq"),
                            id, lease->owner, lease->epoch);
    if (r.empty()) {
      if (lease != nullptr) return LeaseLost(w, id, *lease);
      return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
    }
    const int64_t seq = r[0][0].as<int64_t>();
    w.exec_params(
        "INSERT INTO autoquant_job_logs(job_id, sequence, time_ms, level, message, phase, progress, state) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, NULLIF($8, ''))",
        id, seq, e.time_ms ? e.time_ms : NowMs(), e.level.empty() ? std::string("info") : e.level, e.message,
        StoredPhase(e.phase), e.progress, e.state ? StateText(*e.state) : std::string());
    return seq;
  }

  absl::StatusOr<Job> TransitionTx(pqxx::work& w, const std::string& id, JobState to,
                                   const std::function<void(Job&)>& mutate, const std::optional<LogEntry>& log,
                                   const Lease* lease) {
    pqxx::result r =
        w.exec_params(absl::StrCat("SELECT ", kJobColumns, " FROM autoquant_jobs WHERE id = $1 FOR UPDATE"), id);
    if (r.empty())
      return absl::NotFoundError(absl::StrCat("no job with id '", id, "'; list jobs to see the known ids"));
    ASSIGN_OR_RETURN(Job j, FromRow(r[0]));
    if (lease != nullptr &&
        (j.state != JobState::kRunning || j.owner != lease->owner || j.lease_epoch != lease->epoch)) {
      return LeaseLost(w, id, *lease);
    }
    RETURN_IF_ERROR(CheckTransition(j.state, to));
    j.state = to;
    if (mutate) mutate(j);
    j.state = to;  // mutate may not change the state
    if (IsTerminal(to) && j.finished_ms == 0) j.finished_ms = NowMs();
    if (to != JobState::kRunning) j.lease_expires_ms = 0;
    // The lease columns belong to claims: a state change keeps owner and epoch (the last owner
    // stays visible, and the epoch only ever grows) and ends the lease when the job stops running.
    w.exec_params(
        "UPDATE autoquant_jobs SET state = $2, phase = $3, progress = $4, message = $5, started_ms = $6, "
        "finished_ms = $7, attempts = $8, result = NULLIF($9, ''), cancel_requested = $10, "
        "lease_expires = CASE WHEN $2 = 'running' THEN lease_expires ELSE NULL END WHERE id = $1",
        id, StateText(j.state), StoredPhase(j.phase), j.progress, j.message, j.started_ms, j.finished_ms, j.attempts,
        j.result ? j.result->ToJson().dump() : std::string(), j.cancel_requested);
    if (log) {
      LogEntry e = *log;
      if (IsTerminal(to)) e.state = to;
      if (e.time_ms == 0) e.time_ms = NowMs();
      RETURN_IF_ERROR(AppendLogTx(w, id, e, nullptr).status());
    }
    return j;
  }

  static constexpr size_t kMaxIdle = 8;
  const std::string url_;
  const std::string redacted_;
  const JobStoreOptions options_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
};

}  // namespace

std::string RedactedStoreUrl(const std::string& url) {
  // scheme://user:password@host -> scheme://user:***@host; also password=... in the query.
  static const std::regex userinfo(R"(^([a-z]+://[^:/@]*):[^@/]*@)");
  static const std::regex param(R"(([?&]password=)[^&]*)");
  return std::regex_replace(std::regex_replace(url, userinfo, "$1:***@"), param, "$1***");
}

absl::StatusOr<std::unique_ptr<JobStore>> OpenPostgresJobStore(const std::string& url, const JobStoreOptions& options) {
  JobStoreOptions o = options;
  if (o.owner.empty()) o.owner = NewDaemonId();
  if (!(o.lease_seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--lease-seconds must be > 0 (got ", o.lease_seconds, ")"));
  }
  // A server that drops packets would otherwise hold the first connection for minutes.
  std::string u = url;
  if (!absl::StrContains(u, "connect_timeout="))
    absl::StrAppend(&u, absl::StrContains(u, "?") ? "&" : "?", "connect_timeout=10");
  auto store = std::make_unique<PostgresJobStore>(u, url, o);
  RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<JobStore>(std::move(store));
}

}  // namespace autoquant
