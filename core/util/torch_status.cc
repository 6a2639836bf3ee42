#include "core/util/torch_status.h"

#include <c10/util/Exception.h>

#include <new>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace autoquant {
namespace {
// torch messages carry a C++ backtrace after the first line; keep what a user reads.
std::string FirstLines(absl::string_view msg) {
  auto pos = msg.find("\nException raised from");
  if (pos != absl::string_view::npos) msg = msg.substr(0, pos);
  return std::string(msg);
}
}  // namespace

absl::Status StatusFromCurrentException(absl::string_view context) {
  try {
    throw;
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(context, ": out of device memory: ", FirstLines(e.what_without_backtrace())));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(context, ": ", FirstLines(e.what_without_backtrace())));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(absl::StrCat(context, ": out of host memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(context, ": ", FirstLines(e.what())));
  } catch (...) {
    return absl::InternalError(absl::StrCat(context, ": unknown exception"));
  }
}

}  // namespace autoquant
