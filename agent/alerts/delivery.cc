#include "agent/alerts/delivery.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "base/base64.h"
#include "base/curl.h"
#include "base/units.h"
#include "base/fs.h"
#include "releases/version.h"

namespace agent {

namespace {

using SysClock = std::chrono::system_clock;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kFirstRetry = std::chrono::seconds(1);
constexpr auto kMaxRetry = std::chrono::seconds(60);
constexpr long kConnectTimeoutS = 5;
constexpr long kTransferTimeoutS = 20;
constexpr auto kShutdownGrace = std::chrono::seconds(5);

// libcurl's functions, opened when the first alert goes out (base/curl.h).
using base::curl::curl_easy_getinfo;
using base::curl::curl_easy_setopt;
using base::curl::curl_slist_append;

// A header value on one line: CR and LF (header injection) become spaces.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\r' || c == '\n') c = ' ';
  return s;
}

std::string rfc5322_date(SysClock::time_point t) {
  std::time_t tt = SysClock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  static const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string iso(SysClock::time_point t) { return releases::iso_time(SysClock::to_time_t(t)); }

// "user@example.com" from "Ops <user@example.com>" or a bare address: what SMTP's MAIL/RCPT want.
std::string envelope_address(const std::string& a) {
  size_t lt = a.find('<'), gt = a.rfind('>');
  std::string addr = lt != std::string::npos && gt != std::string::npos && gt > lt ? a.substr(lt + 1, gt - lt - 1) : a;
  return "<" + one_line(addr) + ">";
}

struct Payload {
  const std::string* text;
  size_t offset = 0;
};

size_t read_payload(char* buf, size_t size, size_t n, void* userp) {
  auto* p = static_cast<Payload*>(userp);
  size_t len = std::min(size * n, p->text->size() - p->offset);
  std::memcpy(buf, p->text->data() + p->offset, len);
  p->offset += len;
  return len;
}

size_t discard(char*, size_t size, size_t n, void*) { return size * n; }

// A handle with the delivery timeouts.
struct Curl : base::curl::Easy {
  Curl() : Easy(kConnectTimeoutS, kTransferTimeoutS) {}
};

}  // namespace

std::string redacted_url(const std::string& url) {
  // scheme://host[:port]/... : the path and query (where webhook tokens live) and any userinfo dropped.
  size_t scheme = url.find("://");
  if (scheme == std::string::npos) return "(url)";
  size_t start = scheme + 3, end = url.find_first_of("/?#", start);
  std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (size_t at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  return url.substr(0, start) + authority + (end == std::string::npos ? "" : "/...");
}

std::string email_subject(const Outgoing& o, const std::string& host) {
  const Alert& a = o.alert;
  std::string s = "[agent] " + host + " " + (a.app.empty() ? "" : a.app + ": ") + a.summary;
  if (!a.release.empty() && a.summary.find(a.release) == std::string::npos) s += " (release " + a.release + ")";
  if (o.folded > 0) s += " [+" + std::to_string(o.folded) + " more]";
  s = one_line(s);
  bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  return ascii ? s : "=?UTF-8?B?" + base::base64_encode(s) + "?=";
}

std::string format_email(const Outgoing& o, const AlertSettings& s, const std::string& host, const std::string& message_id) {
  const Alert& a = o.alert;
  std::string to;
  for (const auto& t : s.email_to) to += (to.empty() ? "" : ", ") + one_line(t);
  std::string m;
  auto header = [&](const char* name, const std::string& value) { m += std::string(name) + ": " + value + "\r\n"; };
  header("Date", rfc5322_date(o.when));
  header("From", one_line(s.email_from));
  header("To", to);
  header("Message-ID", "<" + message_id + ">");
  header("Subject", email_subject(o, host));
  header("MIME-Version", "1.0");
  header("Content-Type", "text/plain; charset=utf-8");
  header("Content-Transfer-Encoding", "8bit");
  header("X-Agent-Alert", a.kind);
  m += "\r\n";
  std::string body;
  body += "What happened: " + one_line(a.summary) + "\n";
  body += "When:          " + iso(o.when) + "\n";
  body += "Host:          " + host + "\n";
  if (!a.app.empty()) body += "App:           " + a.app + "\n";
  body += "Event:         " + a.kind + "\n";
  if (a.pid > 0) body += "Worker pid:    " + std::to_string(a.pid) + "\n";
  if (!a.release.empty()) body += "Release:       " + a.release + "\n";
  if (!a.detail.empty()) body += "\nWhat next: " + a.detail + "\n";
  if (a.kind.starts_with("fleet_")) body += "\nTo look: agent fleet status" + (a.app.empty() ? "" : " " + a.app) + "\n";
  else body += "\nTo look: agent status " + a.app + "; agent logs " + a.app + "\n";
  if (o.folded > 0)
    body += "\n" + std::to_string(o.folded) + " more " + a.kind + " alert" + (o.folded == 1 ? "" : "s") + " for " + a.app +
            " since " + iso(o.first_folded) + " were folded into this message (min_interval); this one is the latest.\n";
  body += "\n-- \ndeploy-agent " AGENT_VERSION " on " + host + "\n";
  for (size_t i = 0; i < body.size(); ++i) {  // CRLF line ends, as SMTP wants
    if (body[i] == '\n') m += "\r\n";
    else if (body[i] != '\r') m += body[i];
  }
  return m;
}

std::string format_webhook(const Outgoing& o, const std::string& host) {
  const Alert& a = o.alert;
  nlohmann::json j = {{"host", host},     {"app", a.app},       {"kind", a.kind},   {"summary", a.summary},
                      {"detail", a.detail}, {"pid", a.pid},     {"release", a.release}, {"time", iso(o.when)},
                      {"folded", o.folded}, {"agent_version", AGENT_VERSION}};
  if (o.folded > 0) j["folded_since"] = iso(o.first_folded);
  if (!o.id.empty()) j["id"] = o.id;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

using nlohmann::json;
long long ticks(SteadyClock::time_point t) { return static_cast<long long>(t.time_since_epoch().count()); }
SteadyClock::time_point steady(const json& j) { return SteadyClock::time_point(SteadyClock::duration(j.get<long long>())); }
long long ms(SysClock::time_point t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }
SysClock::time_point sys(const json& j) { return SysClock::time_point(std::chrono::milliseconds(j.get<long long>())); }

json outgoing_json(const Outgoing& o) {
  const Alert& a = o.alert;
  return {{"app", a.app},   {"kind", a.kind},         {"summary", a.summary},         {"detail", a.detail}, {"pid", a.pid},
          {"release", a.release}, {"when", ms(o.when)}, {"folded", o.folded}, {"first_folded", ms(o.first_folded)}, {"id", o.id}};
}
Outgoing outgoing_from(const json& j) {
  Outgoing o;
  o.alert = Alert{j.at("app"), j.at("kind"), j.at("summary"), j.at("detail"), j.at("pid"), j.at("release")};
  o.when = sys(j.at("when"));
  o.folded = j.at("folded");
  o.first_folded = sys(j.at("first_folded"));
  o.id = j.at("id");
  return o;
}

}  // namespace

Delivery::Delivery(AlertSettings settings, std::string host, const nlohmann::json& carried)
    : host_(std::move(host)), settings_(std::move(settings)) {
  if (carried.is_object()) {
    try {
      for (const auto& o : carried.at("inbox")) inbox_.push_back(outgoing_from(o));
      for (const auto& j : carried.at("jobs"))
        jobs_.push_back(Job{j.at("email").get<bool>() ? Channel::Email : Channel::Webhook, outgoing_from(j.at("out")),
                            j.at("attempts").get<int>(), steady(j.at("first_try")), steady(j.at("next_try")),
                            j.at("last_error").get<std::string>()});
      for (const auto& j : carried.at("folds"))
        folds_[{j.at("app").get<std::string>(), j.at("kind").get<std::string>()}] =
            Fold{steady(j.at("last_sent")), j.at("sent").get<bool>(), outgoing_from(j.at("held"))};
      sequence_ = carried.at("sequence").get<unsigned long>();
    } catch (const std::exception& e) {
      spdlog::error("alerts queued by the previous image of the agent are lost: {}", e.what());
    }
  }
  thread_ = std::thread([this] { run(); });
}

nlohmann::json Delivery::hand_off(std::chrono::milliseconds wait) {
  {
    std::lock_guard<std::mutex> l(mu_);
    handing_off_ = true;
    abort_at_ = (SteadyClock::now() + wait).time_since_epoch().count();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  json inbox = json::array(), jobs = json::array(), folds = json::array();
  for (const auto& o : inbox_) inbox.push_back(outgoing_json(o));
  for (const auto& j : jobs_)
    jobs.push_back({{"email", j.channel == Channel::Email}, {"out", outgoing_json(j.out)}, {"attempts", j.attempts},
                    {"first_try", ticks(j.first_try)}, {"next_try", ticks(j.next_try)}, {"last_error", j.last_error}});
  for (const auto& [key, f] : folds_)
    folds.push_back({{"app", key.first}, {"kind", key.second}, {"last_sent", ticks(f.last_sent)}, {"sent", f.sent}, {"held", outgoing_json(f.held)}});
  return {{"inbox", inbox}, {"jobs", jobs}, {"folds", folds}, {"sequence", sequence_}};
}

Delivery::~Delivery() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    stop_deadline_ = SteadyClock::now() + kShutdownGrace;
    abort_at_ = stop_deadline_.time_since_epoch().count();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Delivery::submit(const Alert& a, SysClock::time_point when) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!enabled(settings_)) return;
    inbox_.push_back(Outgoing{a, when, 0, when, ""});
  }
  cv_.notify_all();
}

void Delivery::configure(AlertSettings settings) {
  {
    std::lock_guard<std::mutex> l(mu_);
    settings_ = std::move(settings);
  }
  cv_.notify_all();  // a shorter min_interval, or a channel gone, takes effect now
}

void Delivery::enqueue(Outgoing o, const AlertSettings& s, SteadyClock::time_point now) {
  // One id per message, kept across retries: a retry after a lost answer is recognisably the
  // same message (Message-ID; "id" in the webhook's JSON).
  char id[160];
  std::snprintf(id, sizeof id, "%lld.%d.%lu@%s",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(o.when.time_since_epoch()).count()),
                static_cast<int>(::getpid()), ++sequence_, host_.c_str());
  o.id = id;
  if (!s.email_to.empty()) jobs_.push_back(Job{Channel::Email, o, 0, now, now, ""});
  if (!s.webhook_url.empty()) jobs_.push_back(Job{Channel::Webhook, o, 0, now, now, ""});
}

std::string Delivery::describe(const Job& job) const {
  return std::string(job.channel == Channel::Email ? "email" : "webhook") + " for " + job.out.alert.app + " [" +
         job.out.alert.kind + "] " + job.out.alert.summary;
}

void Delivery::run() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    if (handing_off_) return;  // what waits goes to the next image (hand_off)
    auto now = SteadyClock::now();
    AlertSettings s = settings_;
    bool stopping = stop_;
    // A channel removed by a reload: its queued deliveries go too.
    std::erase_if(jobs_, [&](const Job& j) {
      return j.channel == Channel::Email ? s.email_to.empty() : s.webhook_url.empty();
    });
    // Held alerts whose interval is over (or everything, at shutdown) go first, so that an
    // older alert is never overtaken by a newer one of its kind.
    auto next_wake = now + std::chrono::hours(1);
    auto flush = [&](Fold& f) {
      // One message for every held alert: it shows the latest and counts the others.
      Outgoing o = f.held;
      o.folded = f.held.folded - 1;
      enqueue(o, s, now);
      f.held = Outgoing{};
      f.last_sent = now;
    };
    for (auto& [key, f] : folds_)
      if (f.held.folded > 0 && (stopping || now >= f.last_sent + s.min_interval)) flush(f);
    // New alerts: the first of its (app, kind) in min_interval goes now, the rest are held.
    while (!inbox_.empty()) {
      Outgoing o = std::move(inbox_.front());
      inbox_.pop_front();
      Fold& f = folds_[{o.alert.app, o.alert.kind}];
      SysClock::time_point first = f.held.folded > 0 ? f.held.first_folded : o.when;
      int count = f.held.folded + 1;
      f.held = o;
      f.held.folded = count;
      f.held.first_folded = first;
      if (!f.sent || now - f.last_sent >= s.min_interval) {
        f.sent = true;
        flush(f);
      }
    }
    for (auto& [key, f] : folds_)
      if (f.held.folded > 0) next_wake = std::min(next_wake, f.last_sent + s.min_interval);
    // Deliveries due now. The lock is released while curl talks to the network.
    std::vector<Job> due;
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (stopping || it->next_try <= now) {
        due.push_back(std::move(*it));
        it = jobs_.erase(it);
      } else {
        next_wake = std::min(next_wake, it->next_try);
        ++it;
      }
    }
    if (!due.empty()) {
      l.unlock();
      for (auto& job : due) {
        std::string err;
        if (handing_off_) {  // not tried here: the next image delivers it
          l.lock();
          jobs_.push_back(std::move(job));
          l.unlock();
          continue;
        }
        if (stopping && SteadyClock::now() >= stop_deadline_) {
          spdlog::error("alert {} not delivered: the agent stopped first", describe(job));
          continue;
        }
        if (deliver(job, s, &err)) {
          spdlog::info("alert delivered: {}{}", describe(job),
                       job.attempts > 0 ? " (after " + std::to_string(job.attempts + 1) + " tries)" : "");
          continue;
        }
        job.attempts++;
        auto t = SteadyClock::now();
        if (stopping || t - job.first_try >= s.retry_for) {
          spdlog::error("alert {} not delivered after {} tries over {}: {}", describe(job), job.attempts,
                        base::format_duration(std::chrono::duration_cast<base::Millis>(t - job.first_try)), err);
          continue;
        }
        auto backoff = std::min<SteadyClock::duration>(kFirstRetry * (1 << std::min(job.attempts - 1, 6)), kMaxRetry);
        if (job.attempts == 1)
          spdlog::warn("alert {}: delivery failed ({}); retrying for up to {}", describe(job), err, base::format_duration(s.retry_for));
        job.last_error = err;
        job.next_try = std::min(t + backoff, job.first_try + std::chrono::duration_cast<SteadyClock::duration>(s.retry_for));
        l.lock();
        jobs_.push_back(std::move(job));
        l.unlock();
      }
      l.lock();
      continue;  // look again: alerts may have come in meanwhile
    }
    if (stopping) return;
    cv_.wait_until(l, next_wake, [&] { return stop_ || handing_off_ || !inbox_.empty(); });
  }
}

bool Delivery::deliver(Job& job, const AlertSettings& s, std::string* err) {
  if (!base::curl::open(err)) return false;  // retried like any failed delivery
  return job.channel == Channel::Email ? send_email(job.out, s, err) : send_webhook(job.out, s, err);
}

bool Delivery::send_email(const Outgoing& o, const AlertSettings& s, std::string* err) {
  std::string text = format_email(o, s, host_, o.id);
  Curl c;
  if (!c.h) return *err = "curl_easy_init failed", false;
  curl_easy_setopt(c.h, CURLOPT_URL, s.smtp_url.c_str());
  // smtps://: TLS from the first byte. smtp://: STARTTLS when the server offers it, and
  // required when there is a password to send: it never goes out in clear.
  bool need_tls = s.smtp_url.starts_with("smtps://") || !s.smtp_user.empty();
  curl_easy_setopt(c.h, CURLOPT_USE_SSL, static_cast<long>(need_tls ? CURLUSESSL_ALL : CURLUSESSL_TRY));
  if (!s.tls_ca_file.empty()) curl_easy_setopt(c.h, CURLOPT_CAINFO, s.tls_ca_file.c_str());
  std::string password;
  if (!s.smtp_user.empty()) {
    std::string read_err;
    if (!s.smtp_password_file.empty() && !base::read_file(s.smtp_password_file, &password, &read_err))
      return *err = "smtp_password_file: " + read_err, false;
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
    curl_easy_setopt(c.h, CURLOPT_USERNAME, s.smtp_user.c_str());
    curl_easy_setopt(c.h, CURLOPT_PASSWORD, password.c_str());
  }
  std::string from = envelope_address(s.email_from);
  curl_easy_setopt(c.h, CURLOPT_MAIL_FROM, from.c_str());
  std::vector<std::string> rcpts;
  for (const auto& t : s.email_to) rcpts.push_back(envelope_address(t));
  for (const auto& r : rcpts) c.list = curl_slist_append(c.list, r.c_str());
  curl_easy_setopt(c.h, CURLOPT_MAIL_RCPT, c.list);
  curl_easy_setopt(c.h, CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);  // (spelled so in curl 7.88)  // one bad address must not silence the others
  Payload p{&text, 0};
  curl_easy_setopt(c.h, CURLOPT_READFUNCTION, read_payload);
  curl_easy_setopt(c.h, CURLOPT_READDATA, &p);
  curl_easy_setopt(c.h, CURLOPT_UPLOAD, 1L);
  bool ok = c.perform("smtp " + s.smtp_url, &abort_at_, err);
  std::fill(password.begin(), password.end(), '\0');
  return ok;
}

bool Delivery::send_webhook(const Outgoing& o, const AlertSettings& s, std::string* err) {
  std::string body = format_webhook(o, host_);
  Curl c;
  if (!c.h) return *err = "curl_easy_init failed", false;
  curl_easy_setopt(c.h, CURLOPT_URL, s.webhook_url.c_str());
  if (!s.tls_ca_file.empty()) curl_easy_setopt(c.h, CURLOPT_CAINFO, s.tls_ca_file.c_str());
  c.list = curl_slist_append(c.list, "Content-Type: application/json");
  curl_easy_setopt(c.h, CURLOPT_HTTPHEADER, c.list);
  curl_easy_setopt(c.h, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c.h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, discard);
  std::string where = "webhook " + redacted_url(s.webhook_url);  // a token in the URL stays out of the log
  if (!c.perform(where, &abort_at_, err)) return false;
  long code = 0;
  curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &code);
  if (code < 200 || code > 299) return *err = where + ": answered HTTP " + std::to_string(code) + " (not 2xx)", false;
  return true;
}

}  // namespace agent
