// history.jsonl (history.h).
#include "releases/history.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/log_file.h"
#include "releases/version.h"

namespace releases {

std::string history_line(const HistoryEntry& e) {
  nlohmann::json j = {{"time", e.time}, {"app", e.app}, {"op", e.op}, {"ok", e.ok}, {"detail", e.detail}, {"uid", e.uid}, {"source", e.source}};
  if (e.seconds >= 0) j["seconds"] = std::round(e.seconds * 1000) / 1000;
  if (!e.release.empty()) j["release"] = e.release;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<HistoryEntry> parse_history_line(const std::string& line) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (!j.is_object() || !j.contains("time") || !j["time"].is_string() || !j.contains("op") || !j["op"].is_string()) return std::nullopt;
  HistoryEntry e;
  try {
    e.time = j["time"];
    e.op = j["op"];
    e.app = j.value("app", "");
    e.ok = j.value("ok", true);
    e.detail = j.value("detail", "");
    e.uid = j.value("uid", -1L);
    e.source = j.value("source", "");
    e.seconds = j.value("seconds", -1.0);
    e.release = j.value("release", "");
    // A line edited by hand (or damaged) is shown as it is, not as something else: a uid past
    // uid_t would wrap (4294967296 is not root), a duration past a year is not one this wrote.
    if (e.uid > 0xfffffffeL || e.uid < -1) return std::nullopt;
    if (!(e.seconds <= 366.0 * 86400)) e.seconds = -1;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // a field of the wrong type
  }
  return e;
}

HistoryLog::HistoryLog(const std::string& path) : file_(std::make_unique<base::LogFile>(path, kMaxSize, kMaxFiles)) {}
HistoryLog::~HistoryLog() = default;

void HistoryLog::add(HistoryEntry e) {
  if (e.time.empty()) e.time = now_stamp();
  file_->write_line(history_line(e));
}

const std::string& HistoryLog::path() const { return file_->path(); }

void HistoryLog::flush() { file_->flush(std::chrono::milliseconds(2000)); }

std::vector<HistoryEntry> read_history(const std::string& path, const std::string& since, std::vector<std::string>* warnings) {
  std::vector<std::string> files;  // oldest first: .3, .2, .1, then the file itself
  for (int i = HistoryLog::kMaxFiles; i >= 1; --i) files.push_back(path + "." + std::to_string(i));
  files.push_back(path);
  std::vector<HistoryEntry> out;
  for (const auto& file : files) {
    std::string text, err;
    if (!base::read_file(file, &text, &err)) continue;  // not there (yet): nothing in it
    size_t pos = 0;
    for (int n = 1; pos < text.size(); ++n) {
      size_t nl = text.find('\n', pos);
      std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? text.size() : nl + 1;
      if (line.empty()) continue;
      auto e = parse_history_line(line);
      if (!e) {
        // the writer's own note of lines it could not write is not an entry either
        if (warnings) warnings->push_back(file + ":" + std::to_string(n) + ": not a history entry: " + line.substr(0, 80));
        continue;
      }
      if (since.empty() || e->time >= since) out.push_back(std::move(*e));
    }
  }
  return out;
}

}  // namespace releases
