// A throwaway PostgreSQL server for the fleet tests: initdb + pg_ctl in a
// fresh directory under /tmp, on a free loopback port, trust authentication,
// fsync off; stopped (immediate mode) and its files removed when destroyed.
// initdb refuses to run as root, so as root the server runs as Debian's
// `postgres` system user (runuser). The server binaries come from
// $AUTOQUANT_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin
// (scripts/setup.sh installs Debian's postgresql).
//
//   ASSERT_OK_AND_ASSIGN(auto pg, PgTestServer::Start());
//   ASSERT_OK_AND_ASSIGN(std::string url, pg->NewDatabase());   // postgresql://autoquant@127.0.0.1:PORT/db_N
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace autoquant::testing {

class PgTestServer {
 public:
  static absl::StatusOr<std::unique_ptr<PgTestServer>> Start() {
    namespace fs = std::filesystem;
    std::string bindir;
    if (const char* env = std::getenv("AUTOQUANT_PG_BINDIR")) bindir = env;
    std::error_code ec;
    if (bindir.empty() && fs::is_directory("/usr/lib/postgresql", ec)) {
      int best = -1;
      for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
        const int v = std::atoi(e.path().filename().c_str());
        if (v > best && fs::exists(e.path() / "bin" / "initdb")) {
          best = v;
          bindir = (e.path() / "bin").string();
        }
      }
    }
    if (bindir.empty() || !fs::exists(fs::path(bindir) / "pg_ctl")) {
      return absl::FailedPreconditionError(
          "no PostgreSQL server binaries (initdb, pg_ctl): run scripts/setup.sh (installs Debian's postgresql) "
          "or set AUTOQUANT_PG_BINDIR");
    }
    char tmpl[] = "/tmp/aq-pg-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
    auto server = std::unique_ptr<PgTestServer>(new PgTestServer(bindir, tmpl, FreePort()));
    const bool root = ::geteuid() == 0;
    server->as_ = root ? "runuser -u postgres -- " : "";
    if (root && std::system(absl::StrCat("chown postgres ", server->dir_).c_str()) != 0) {
      return absl::FailedPreconditionError("cannot chown the server's directory to the postgres user");
    }
    const std::string d = server->dir_;
    if (server->Run(absl::StrCat(bindir, "/initdb -D ", d, "/data -A trust -U autoquant --no-sync -E UTF8 >", d,
                                 "/initdb.log 2>&1")) != 0) {
      return absl::InternalError(absl::StrCat("initdb failed; see ", d, "/initdb.log"));
    }
    if (server->Run(absl::StrCat(bindir, "/pg_ctl -D ", d, "/data -l ", d, "/server.log -w -t 60 -o \"-p ",
                                 server->port_, " -k ", d, " -c listen_addresses=127.0.0.1 -c fsync=off ",
                                 "-c max_connections=200\" start >", d, "/pg_ctl.log 2>&1")) != 0) {
      return absl::InternalError(absl::StrCat("pg_ctl start failed; see ", d, "/server.log"));
    }
    server->running_ = true;
    return server;
  }

  ~PgTestServer() {
    if (running_) Run(absl::StrCat(bindir_, "/pg_ctl -D ", dir_, "/data -m immediate -w stop >/dev/null 2>&1"));
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string Url(const std::string& db) const {
    return absl::StrCat("postgresql://autoquant@127.0.0.1:", port_, "/", db);
  }

  // A fresh, empty database; its URL.
  absl::StatusOr<std::string> NewDatabase() {
    static std::atomic<int> n{0};
    const std::string name = absl::StrCat("db_", ::getpid(), "_", n++);
    try {
      pqxx::connection c(Url("postgres"));
      pqxx::nontransaction t(c);
      t.exec("CREATE DATABASE " + name);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("CREATE DATABASE ", name, ": ", e.what()));
    }
    return Url(name);
  }

  int port() const { return port_; }

 private:
  PgTestServer(std::string bindir, std::string dir, int port)
      : bindir_(std::move(bindir)), dir_(std::move(dir)), port_(port) {}

  int Run(const std::string& cmd) const { return std::system((as_ + cmd).c_str()); }

  static int FreePort() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(s);
    return ntohs(a.sin_port);
  }

  std::string bindir_, dir_, as_;
  int port_;
  bool running_ = false;
};

}  // namespace autoquant::testing
