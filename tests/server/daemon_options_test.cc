#include "server/daemon_options.h"

#include <gtest/gtest.h>

namespace autoquant {
namespace {

TEST(IsLoopbackAddressTest, LoopbackAddressLiteralsAndLocalhost) {
  for (const char* hp : {"127.0.0.1:50051", "127.1.2.3:0", "127.255.255.255:1", "localhost:50051", "LocalHost:1",
                         "[::1]:50051", "[::ffff:127.0.0.1]:1", "unix:/tmp/aq.sock", "unix-abstract:aq"}) {
    EXPECT_TRUE(IsLoopbackAddress(hp)) << hp;
  }
}

TEST(IsLoopbackAddressTest, HostNamesThatMerelyBeginWith127AreNotLoopback) {
  for (const char* hp : {"127.evil.com:50051", "127.0.0.1.evil.com:50051", "127.example:1", "127.0.0.1x:1",
                         "0.0.0.0:50051", "[::]:50051", "10.0.0.1:1", "localhost.evil.com:1", "[::ffff:10.0.0.1]:1",
                         "128.0.0.1:1", ":50051", "example.com:50051"}) {
    EXPECT_FALSE(IsLoopbackAddress(hp)) << hp;
  }
}

}  // namespace
}  // namespace autoquant
