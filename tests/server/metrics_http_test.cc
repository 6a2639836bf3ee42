// /metrics under the rules of --listen: loopback by default, a token on every scrape when one is
// configured, and slow clients that cannot stall scraping. Real sockets against a real Exposer.
#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace autoquant {
namespace {
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

MetricsHttpOptions Opts(const std::string& flag, const std::string& token = "", bool insecure = false) {
  MetricsHttpOptions o;
  o.flag = flag;
  o.token = token;
  o.insecure = insecure;
  return o;
}

TEST(MetricsBindAddressTest, ABarePortMeansLoopback) {
  EXPECT_EQ(MetricsBindAddress("9464"), "127.0.0.1:9464");
  EXPECT_EQ(MetricsBindAddress("0"), "127.0.0.1:0");
  EXPECT_EQ(MetricsBindAddress("0.0.0.0:9464"), "0.0.0.0:9464");
  EXPECT_EQ(MetricsBindAddress("[::1]:9464"), "[::1]:9464");
}

TEST(MetricsAuthorizedTest, BearerOrBasicWithTheTokenAsPassword) {
  const std::string t = "s3cret";
  EXPECT_TRUE(MetricsAuthorized("Bearer s3cret", t));
  EXPECT_TRUE(MetricsAuthorized("bearer s3cret", t));
  EXPECT_TRUE(MetricsAuthorized(absl::StrCat("Basic ", absl::Base64Escape("prometheus:s3cret")), t));
  EXPECT_TRUE(MetricsAuthorized(absl::StrCat("Basic ", absl::Base64Escape(":s3cret")), t));
  EXPECT_FALSE(MetricsAuthorized("", t));
  EXPECT_FALSE(MetricsAuthorized("Bearer s3cre", t));
  EXPECT_FALSE(MetricsAuthorized("Bearer s3cretX", t));
  EXPECT_FALSE(MetricsAuthorized("s3cret", t));
  EXPECT_FALSE(MetricsAuthorized(absl::StrCat("Basic ", absl::Base64Escape("s3cret:wrong")), t));
  EXPECT_FALSE(MetricsAuthorized(absl::StrCat("Basic ", absl::Base64Escape("s3cret")), t));
  EXPECT_FALSE(MetricsAuthorized("Basic !!!notbase64", t));
  EXPECT_FALSE(MetricsAuthorized("Bearer ", ""));  // no token configured: nothing to match
}

TEST(MetricsServerTest, OffLoopbackWithoutTokenOrInsecureIsRefused) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto s = MetricsServer::Start(Opts("0.0.0.0:0"), registry);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("--token-file"));
  EXPECT_THAT(s.status().message(), HasSubstr("--insecure"));
  EXPECT_TRUE(MetricsServer::Start(Opts("0.0.0.0:0", "t"), registry).ok());
  EXPECT_TRUE(MetricsServer::Start(Opts("0.0.0.0:0", "", true), registry).ok());
}

// A TCP connection to 127.0.0.1:port (-1 on failure).
int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request`, returns what the server answers before closing or `timeout` passing.
std::string Exchange(int port, const std::string& request, std::chrono::milliseconds timeout) {
  int fd = Connect(port);
  if (fd < 0) return "";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, n);
  }
  ::close(fd);
  return out;
}

std::string Get(const std::string& authorization = "") {
  return absl::StrCat("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
                      authorization.empty() ? "" : absl::StrCat("Authorization: ", authorization, "\r\n"), "\r\n");
}

class LiveMetricsTest : public ::testing::Test {
 protected:
  void Start(const MetricsHttpOptions& o) {
    registry_ = std::make_shared<prometheus::Registry>();
    prometheus::BuildCounter().Name("autoquant_test_total").Help("t").Register(*registry_).Add({}).Increment();
    auto s = MetricsServer::Start(o, registry_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    port_ = std::stoi(server_->address().substr(server_->address().rfind(':') + 1));
  }
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsServer> server_;
  int port_ = 0;
};

TEST_F(LiveMetricsTest, ABarePortListensOnLoopback) {
  ASSERT_NO_FATAL_FAILURE(Start(Opts("0")));
  EXPECT_THAT(server_->address(), StartsWith("127.0.0.1:"));
  EXPECT_THAT(Exchange(port_, Get(), std::chrono::seconds(5)), HasSubstr("autoquant_test_total 1"));
}

TEST_F(LiveMetricsTest, WithATokenEveryScrapeMustCarryIt) {
  ASSERT_NO_FATAL_FAILURE(Start(Opts("127.0.0.1:0", "tok-123")));
  const std::string none = Exchange(port_, Get(), std::chrono::seconds(5));
  EXPECT_THAT(none, StartsWith("HTTP/1.1 401"));
  EXPECT_THAT(none, Not(HasSubstr("autoquant_test_total")));
  EXPECT_THAT(Exchange(port_, Get("Bearer wrong"), std::chrono::seconds(5)), StartsWith("HTTP/1.1 401"));
  EXPECT_THAT(Exchange(port_, Get("Bearer tok-123"), std::chrono::seconds(5)), HasSubstr("autoquant_test_total 1"));
  EXPECT_THAT(Exchange(port_, Get(absl::StrCat("Basic ", absl::Base64Escape("prom:tok-123"))), std::chrono::seconds(5)),
              HasSubstr("autoquant_test_total 1"));
}

TEST_F(LiveMetricsTest, HalfSentRequestsDoNotStallScraping) {
  ASSERT_NO_FATAL_FAILURE(Start(Opts("127.0.0.1:0")));
  // Two clients that send half a request and then nothing (with the old two threads: a 30 s stall).
  int slow[2];
  for (int& fd : slow) {
    fd = Connect(port_);
    ASSERT_GE(fd, 0);
    const std::string half = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    ::send(fd, half.data(), half.size(), MSG_NOSIGNAL);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // both now hold a server thread
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THAT(Exchange(port_, Get(), std::chrono::seconds(10)), HasSubstr("autoquant_test_total 1"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  for (int fd : slow) ::close(fd);
}

}  // namespace
}  // namespace autoquant
