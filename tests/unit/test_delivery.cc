// The alert email and webhook bodies: RFC 5322 headers, no header injection, UTF-8 subjects,
// folded counts.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "agent/alerts/delivery.h"

using namespace agent;

namespace {
Outgoing sample() {
  Outgoing o;
  o.alert = {"nuomi", "drain_stalled", "drain of worker 0 (pid 4242, release R1) stalled 10s",
             "still alive 10s after SIGTERM; next: SIGKILL at 2026-11-23T01:00:10Z", 4242, "R1"};
  o.when = std::chrono::system_clock::from_time_t(1795395600);  // 2026-11-23T01:00:00Z
  o.first_folded = o.when;
  return o;
}
AlertSettings settings() {
  AlertSettings s;
  s.email_to = {"ops@example.com", "Two <two@example.com>"};
  s.email_from = "agent@example.com";
  s.smtp_url = "smtp://127.0.0.1:25";
  return s;
}
}  // namespace

TEST_CASE("an alert email has the RFC 5322 headers and says what, when, where and what next") {
  std::string m = format_email(sample(), settings(), "host1", "1.2.3@host1");
  CHECK(m.starts_with("Date: Mon, 23 Nov 2026 01:00:00 +0000\r\n"));
  CHECK(m.find("\r\nFrom: agent@example.com\r\n") != std::string::npos);
  CHECK(m.find("\r\nTo: ops@example.com, Two <two@example.com>\r\n") != std::string::npos);
  CHECK(m.find("\r\nMessage-ID: <1.2.3@host1>\r\n") != std::string::npos);
  CHECK(m.find("\r\nSubject: [agent] host1 nuomi: drain of worker 0 (pid 4242, release R1) stalled 10s\r\n") != std::string::npos);
  CHECK(m.find("\r\n\r\nWhat happened: drain of worker 0") != std::string::npos);
  CHECK(m.find("When:          2026-11-23T01:00:00Z\r\n") != std::string::npos);
  CHECK(m.find("Worker pid:    4242\r\n") != std::string::npos);
  CHECK(m.find("What next: still alive 10s after SIGTERM; next: SIGKILL at 2026-11-23T01:00:10Z\r\n") != std::string::npos);
  CHECK(m.find("To look: agent status nuomi") != std::string::npos);
  // Every line ends in CRLF: no bare LF.
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i] == '\n') {
      REQUIRE(i > 0);
      CHECK(m[i - 1] == '\r');
    }
}

TEST_CASE("a summary cannot inject headers, and a non-ASCII subject is encoded") {
  Outgoing o = sample();
  o.alert.summary = "bad\r\nBcc: victim@example.com";
  o.alert.release = "";
  std::string m = format_email(o, settings(), "h", "id@h");
  std::string headers = m.substr(0, m.find("\r\n\r\n"));
  CHECK(headers.find("\r\nBcc:") == std::string::npos);
  CHECK(email_subject(o, "h") == "[agent] h nuomi: bad  Bcc: victim@example.com");
  o.alert.summary = "déploiement";
  CHECK(email_subject(o, "h") == "=?UTF-8?B?W2FnZW50XSBoIG51b21pOiBkw6lwbG9pZW1lbnQ=?=");
}

TEST_CASE("a folded message counts the alerts it stands for") {
  Outgoing o = sample();
  o.folded = 3;
  o.first_folded = o.when - std::chrono::seconds(90);
  CHECK(email_subject(o, "h").ends_with(" [+3 more]"));
  std::string m = format_email(o, settings(), "h", "id@h");
  CHECK(m.find("3 more drain_stalled alerts for nuomi since 2026-11-23T00:58:30Z were folded into this message") !=
        std::string::npos);
  auto j = nlohmann::json::parse(format_webhook(o, "h"));
  CHECK(j["folded"] == 3);
  CHECK(j["folded_since"] == "2026-11-23T00:58:30Z");
  CHECK(j["kind"] == "drain_stalled");
  CHECK(j["pid"] == 4242);
  CHECK(j["host"] == "h");
}
