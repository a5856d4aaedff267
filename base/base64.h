// Base64 (RFC 4648, with padding): MIME headers of alert mail, keys and values of etcd's JSON
// gateway.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace base {

std::string base64_encode(std::string_view in);
/// nullopt when `in` is not base64.
std::optional<std::string> base64_decode(std::string_view in);

}  // namespace base
