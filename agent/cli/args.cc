// The command line grammar (args.h), in CLI11: one subcommand per verb, each with only its own
// flags, so `agent VERB --help` is generated from what the verb really takes.
#include "agent/cli/args.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>

#include "agent/config/config.h"
#include "base/text.h"
#include "base/units.h"

namespace agent {
namespace {

constexpr const char* kAbout = "agent: deploys apps with zero failed requests";

constexpr const char* kFooter =
    "APP may be left out when the config has one app. `agent COMMAND --help` tells one command.\n"
    "-c FILE may come anywhere; the default is $AGENT_CONFIG, then /etc/agent/agent.toml.\n"
    "Exit codes: 0 done, 1 refused or failed (a message says why), 2 usage error.";

// The long help of each verb, after the flags CLI11 lists.
const std::map<std::string, std::string> kLong = {
    {"run", "The daemon, in the foreground (systemd's agent.service runs this). SIGTERM drains and stops\n"
            "every worker and exits 0; SIGHUP reloads the config."},
    {"status", "Each app: state, current release, operation in progress; each worker: slot, pid, release, state,\n"
               "role, uptime, CPU%, RSS, restarts and why it last exited, sorted by slot.\n"
               "--check, for Nagios-style checks and scripts: one line per app and exit 0 when every app has\n"
               "`instances` ready workers, 1 when one is degraded, 2 when one is down or the agent unreachable,\n"
               "3 when the config cannot be read."},
    {"deploy", "Stages a new release and rolls it out, batch by batch, printing each step. The release is a copy\n"
               "of DIR (default: the app's source directory), or with --rev the commit REV (a sha, a branch, a\n"
               "tag, HEAD~1) exported from the app's git repository; its version is then the package.json version\n"
               "plus the short commit id. A request made while another operation runs waits; a newer one\n"
               "replaces a waiting one. Exit 0 when the release is live, 1 when it was refused or reverted.\n"
               "An app with fleet_waves in a [fleet] waits for its slot before it rolls (\"waiting for a fleet slot:\n"
               "web-02 rolling 1.4.0\"); --no-fleet goes past that gate, for an emergency, and is journaled so."},
    {"reload", "Replaces every worker, batch by batch, on the current release with the launch environment\n"
               "rebuilt (env_file, [app.env], the PATH): no request fails. Exit 1 when it was refused or reverted."},
    {"start", "Starts the app's workers on its current release (after `agent stop`)."},
    {"stop", "Drains and stops the app's workers; the app stays stopped until start, deploy or a daemon restart."},
    {"restart", "stop, then start: every worker at once, so it has downtime. `agent reload` has none."},
    {"rollback", "Goes back N activated releases (default 1), skipping failed and rolled-back ones, or to the\n"
                 "release --to ID, with the same rolling swap as a deploy. `agent releases` lists them."},
    {"releases", "Lists the releases of APP (all apps when left out) newest staged first: staging time, id,\n"
                 "version, source, state (active, previous, staged, failed, rolled_back, bad, halted) and a * on\n"
                 "the current one, with the deploys refused before anything was staged (refused, with the reason).\n"
                 "Needs no daemon."},
    {"env", "Prints the exact environment a worker of APP starts with, built the way the daemon builds it:\n"
            "the inherit allow-list, the account's HOME/USER/LOGNAME, env_file, [app.env], then the agent's\n"
            "own variables, with PATH composed entry by entry. Each variable shows where it came from, and\n"
            "the last line says where command[0] resolves. Uses the current release (or --release ID; the\n"
            "source directory when nothing is deployed yet). Needs no daemon.\n"
            "Values of variables whose names look secret (PASSWORD, SECRET, TOKEN, KEY, CREDENTIAL, PRIVATE)\n"
            "are hidden unless --show-secrets.\n"
            "Exit 1 when command[0] does not resolve: the daemon would refuse to deploy."},
    {"logs", "The workers' output (and build steps) from <log_dir>/APP/app.log and its rotated files, each\n"
             "line stamped with time, slot/pid and stream. Without APP, every app's lines, each prefixed with\n"
             "the app's name, in time order. -n reaches back into the rotated files; -f follows the log\n"
             "across rotation (inotify) without losing or repeating a line. Works while the config has an\n"
             "error that is not a syntax error. Needs no daemon."},
    {"check", "Reads the config and reports every problem as file:line:col: message. Exit 0 when the file\n"
              "is valid, 1 when it is not. --deep also checks the host: every env_file exists and is readable,\n"
              "command[0] resolves on the launch PATH, the user account exists, the source directory exists\n"
              "(agent.service runs it before the daemon starts)."},
    {"history", "Every operation the agent did, newest last: deploys, rollbacks, reloads, starts, stops,\n"
                "restarts, crash restarts, memory replacements, config reloads (with the keys that changed),\n"
                "who asked (uid, or the agent itself) and how long it took. Needs no daemon."},
    {"upgrade", "The running daemon executes its binary again from disk (after a package upgrade replaced it),\n"
                "in the same pid: the listening sockets, the control socket and every worker stay, no worker\n"
                "restarts, no request fails. The new binary is checked first (--version, and check of the\n"
                "running config); if it fails, the running agent goes on and says why. While an operation\n"
                "runs (a deploy, a bake, a worker starting) the upgrade waits for it to end, up to --wait.\n"
                "Exit 0 when the new image answers; it says how many workers it kept."},
    {"systemd-socket", "Prints agent.socket's ListenStream= lines for every listen address of the config, as a\n"
                       "drop-in (agent.socket ships with none). With agent.socket enabled, systemd holds the apps'\n"
                       "listening sockets, so connections wait in their queues while the agent itself restarts.\n"
                       "Exit 1 when no app listens on anything."},
    {"fleet", "The hosts of this agent's [fleet] roll a new version of an app with fleet_waves a wave at a time,\n"
              "coordinated through etcd (docs/operating.md \"Fleets\")."},
    {"fleet status", "Each host (alive or not), the version it runs, and its state for the newest version of each\n"
                     "app: waiting, rolling, baking, done, failed, halted; the open wave, and a halt with the host\n"
                     "and reason. Exit 1 when etcd cannot be read."},
    {"fleet resume", "Lifts the halt a failed host put on APP VERSION: the hosts that gave up on it, and the one\n"
                     "that failed it, deploy it again, wave by wave. Same authorisation as deploy."},
    {"post-receive", "Run by the post-receive hook the agent installs in an app's bare repository, with git's\n"
                     "\"<old> <new> <ref>\" lines on stdin. Each pushed ref goes to the daemon: a push to the app's\n"
                     "branch is deployed (progress is printed, so the pusher sees it as remote: lines, ending in\n"
                     "\"live\" or the reason it was not deployed); other branches and deletions change nothing.\n"
                     "--socket names the control socket (the hook passes it), so no config file is read;\n"
                     "--branch ignores other refs here, even when the daemon cannot be reached.\n"
                     "Exit 1 when a push to the branch was not deployed."},
    {"import-pm2", "Turns a PM2 ecosystem file (JSON or JSON5: {\"apps\": [...]}, an array, or one app) into an\n"
                   "agent.toml on stdout, with a comment on every PM2 key that was not carried over and why.\n"
                   "Check the result with `agent check -c FILE`."},
};

// A whole number, for -n and --slot: "abc", "-3" and "5x" are refused by name.
CLI::Validator whole_number() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        bool digits = !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
        return digits ? "" : "\"" + s + "\" is not a whole number";
      },
      "");
}

CLI::Validator duration() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        std::string why;
        return base::parse_duration(s, &why) ? "" : why;
      },
      "");
}

std::string verb_of(const CLI::App* sub) {
  std::string v;
  for (const CLI::App* p = sub; p && p->get_parent(); p = p->get_parent()) v = p->get_name() + (v.empty() ? "" : " " + v);
  return v;
}

// The innermost subcommand chosen ("fleet status"), or the root.
CLI::App* chosen(CLI::App* app) {
  for (CLI::App* sub : app->get_subcommands())
    if (sub->parsed()) return chosen(sub);
  return app;
}

std::vector<std::string> option_names(const CLI::App* sub) {
  std::vector<std::string> names;
  for (const CLI::Option* o : sub->get_options()) {
    for (const auto& l : o->get_lnames()) names.push_back("--" + l);
    for (const auto& s : o->get_snames()) names.push_back("-" + s);
  }
  return names;
}

// "status: unknown option --from (deploy takes it)" / "(did you mean --json?)".
std::string explain_extra(CLI::App* root, CLI::App* sub, const std::string& word) {
  std::string verb = verb_of(sub);
  std::string name = word.substr(0, word.find('='));
  if (!name.starts_with("-")) {
    size_t max = 0;
    for (const CLI::Option* o : sub->get_options())
      if (o->get_positional()) max += o->get_expected_max();
    return verb + ": unexpected argument \"" + word + "\" (" + verb + (max == 0 ? " takes none" : " takes at most " + std::to_string(max)) + ")";
  }
  std::string msg = (verb.empty() ? "" : verb + ": ") + "unknown option " + name;
  if (std::string near = nearest_word(name, option_names(sub)); !near.empty()) return msg + " (did you mean " + near + "?)";
  std::vector<std::string> takers;
  for (CLI::App* other : root->get_subcommands({})) {
    for (CLI::App* leaf : other->get_subcommands({}).empty() ? std::vector<CLI::App*>{other} : other->get_subcommands({})) {
      auto names = option_names(leaf);
      if (std::find(names.begin(), names.end(), name) != names.end()) takers.push_back(verb_of(leaf));
    }
  }
  if (takers.empty()) return msg;
  std::string list;
  for (const auto& t : takers) list += (list.empty() ? "" : ", ") + t;
  return msg + " (" + list + (takers.size() == 1 ? " takes it)" : " take it)");
}

// The first `count` words that are not options (nor -c's value): the verb, and its sub-verb.
std::vector<std::string> words(const std::vector<std::string>& argv, size_t count) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size() && out.size() < count; ++i) {
    const std::string& s = argv[i];
    if (s == "-c" || s == "--config") {
      ++i;
      continue;
    }
    if (s.starts_with("-") && s != "-") continue;
    out.push_back(s);
  }
  return out;
}

// "agent rollback [N] [APP] [OPTIONS]", from the verb's positional arguments.
std::string usage_of(CLI::App* sub) {
  std::string u = "agent " + verb_of(sub);
  for (const CLI::Option* o : sub->get_options()) {
    if (!o->get_positional()) continue;
    std::string name = o->get_name();  // APP, FILE, N_APP, APP_VERSION
    for (size_t from = 0, to; from <= name.size(); from = to + 1) {
      to = std::min(name.find('_', from), name.size());
      std::string part = name.substr(from, to - from);
      u += o->get_expected_min() == 0 ? " [" + part + "]" : " " + part;
    }
  }
  return u + " [OPTIONS]";
}

// The sub-verbs of `sub` ("status", "resume" of fleet).
std::vector<std::string> names_of(CLI::App* sub) {
  std::vector<std::string> names;
  for (const CLI::App* s : sub->get_subcommands({})) names.push_back(s->get_name());
  return names;
}

std::string unknown(const std::string& what, const std::string& word, const std::vector<std::string>& known, const std::string& help) {
  std::string near = nearest_word(word, known);
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  return "agent: unknown " + what + " \"" + word + "\"" + (near.empty() ? " (" + list + ")" : " (did you mean " + near + "?)") +
         "\n(see " + help + " --help)";
}

}  // namespace

std::string nearest_word(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = 3;
  for (const auto& c : candidates) {
    size_t d = base::edit_distance(word, c);
    if (d < best_d && d * 2 < std::max(word.size(), c.size())) best = c, best_d = d;
  }
  return best;
}

int parse_args(const std::vector<std::string>& argv, Args* a, std::string* out, std::string* err) {
  CLI::App app{kAbout, "agent"};
  app.footer(kFooter);
  app.require_subcommand(0, 1);
  app.get_formatter()->column_width(32);
  a->config = default_config_path();
  // -c FILE before the verb or after it: each verb takes it too (CLI11's fallthrough would also
  // let a word after the verb that names another verb start that one).
  auto config = [&](CLI::App* sub) { sub->add_option("-c,--config", a->config, "the config file")->type_name("FILE"); };
  config(&app);
  bool version = false;
  app.add_flag("--version", version, "print the version and exit");

  auto verb = [&](const std::string& name, const std::string& about) {
    CLI::App* sub = app.add_subcommand(name, about);
    sub->footer(kLong.at(name));
    config(sub);
    return sub;
  };
  auto app_arg = [&](CLI::App* sub, const std::string& about = "the app (may be left out when the config has one)") {
    sub->add_option("APP", a->positional, about)->expected(0, 1)->type_name("");
  };
  auto json = [&](CLI::App* sub) { sub->add_flag("--json", a->json, "print JSON for scripts"); };

  verb("run", "the daemon, in the foreground");

  CLI::App* status = verb("status", "apps, their releases and workers");
  app_arg(status);
  CLI::Option* status_json = status->add_flag("--json", a->json, "print JSON for scripts");
  status->add_flag("--check", a->check, "exit 0 all up, 1 degraded, 2 down (Nagios-style)")->excludes(status_json);

  CLI::App* deploy = verb("deploy", "stage a release and roll it out, batch by batch");
  app_arg(deploy);
  CLI::Option* from = deploy->add_option("--from", a->from, "stage this directory (default: the app's source)")->type_name("DIR");
  deploy->add_option("--rev", a->rev, "export this commit of the app's git repository")->type_name("REV")->excludes(from);
  deploy->add_flag("--no-fleet", a->no_fleet, "go past the fleet's gate (an emergency; journaled)");

  app_arg(verb("reload", "rolling swap onto the current release, environment rebuilt"));
  app_arg(verb("start", "start a stopped app"));
  app_arg(verb("stop", "drain and stop an app's workers"));
  app_arg(verb("restart", "stop then start (has downtime; reload has none)"));

  CLI::App* rollback = verb("rollback", "back N activated releases (default 1), or --to ID");
  rollback->add_option("N_APP", a->positional, "N (a whole number, default 1), then APP")->expected(0, 2)->type_name("");
  rollback->add_option("--to", a->to, "the release id to go back to (agent releases lists them)")->type_name("ID");

  CLI::App* releases = verb("releases", "releases on disk, newest staged first");
  app_arg(releases, "the app (all apps when left out)");
  json(releases);

  CLI::App* env = verb("env", "the launch environment a worker gets, and where it comes from");
  app_arg(env);
  env->add_option("--release", a->release, "a staged release instead of the current one")->type_name("ID");
  json(env);
  env->add_flag("--show-secrets", a->show_secrets, "print values of PASSWORD/SECRET/TOKEN/KEY-like variables");

  CLI::App* logs = verb("logs", "the workers' output");
  app_arg(logs, "the app (every app when left out)");
  std::string lines;
  logs->add_option("-n,--lines", lines, "the last N lines (default 50; all with --since)")->check(whole_number())->type_name("N");
  logs->add_flag("-f,--follow", a->follow, "keep printing new lines, across rotation");
  std::string since;
  logs->add_option("--since", since, "only lines of the last DURATION (10m, 2h, 1d)")->check(duration())->type_name("DURATION");
  logs->add_option("--stream", a->stream, "only the workers' stdout or stderr")->check(CLI::IsMember({"out", "err"}).description(""))->type_name("out|err");
  std::string slot;
  logs->add_option("--slot", slot, "only the worker in slot N")->check(whole_number())->type_name("N");

  CLI::App* check = verb("check", "validate the config");
  check->add_flag("--deep", a->deep, "also check the host: env files, command, account, source");

  CLI::App* history = verb("history", "every operation, who asked and how long it took");
  app_arg(history, "the app (every app when left out)");
  history->add_option("--since", since, "only the last DURATION (10m, 2h, 1d)")->check(duration())->type_name("DURATION");
  json(history);


  CLI::App* fleet = verb("fleet", "the hosts of [fleet] and their turns at a version");
  fleet->require_subcommand(1);
  CLI::App* fleet_status = fleet->add_subcommand("status", "each host and its state for each app's newest version");
  fleet_status->footer(kLong.at("fleet status"));
  config(fleet_status);
  app_arg(fleet_status, "only this app");
  json(fleet_status);
  CLI::App* fleet_resume = fleet->add_subcommand("resume", "lift a halt: the hosts deploy the version again");
  fleet_resume->footer(kLong.at("fleet resume"));
  config(fleet_resume);
  fleet_resume->add_option("APP_VERSION", a->positional, "the app and the halted version")->expected(2, 2)->required()->type_name("");

  CLI::App* post_receive = verb("post-receive", "what an app's git hook runs: deploys the pushed branch");
  post_receive->add_option("APP", a->positional, "the app")->required()->expected(1)->type_name("");
  post_receive->add_option("--socket", a->socket, "the control socket (no config is read)")->type_name("PATH");
  post_receive->add_option("--branch", a->branch, "ignore refs other than this branch")->type_name("BRANCH");

  CLI::App* upgrade = verb("upgrade", "run the agent's binary again from disk, keeping every worker");
  std::string wait;
  upgrade->add_option("--wait", wait, "wait this long for a running operation to end (default 5m)")->check(duration())->type_name("DURATION");

  verb("systemd-socket", "print agent.socket's ListenStream= lines for the config");

  CLI::App* import = verb("import-pm2", "turn a PM2 ecosystem file into an agent.toml");
  import->add_option("FILE", a->positional, "the PM2 JSON or JSON5 file")->required()->expected(1)->type_name("");

  // A misspelt verb is named before CLI11 would call it an unexpected argument.
  std::vector<std::string> given = words(argv, 2);
  if (!given.empty()) {
    auto verbs = names_of(&app);
    if (std::find(verbs.begin(), verbs.end(), given[0]) == verbs.end()) return *err = unknown("command", given[0], verbs, "agent"), 2;
    CLI::App* sub = app.get_subcommand(given[0]);
    auto subs = names_of(sub);
    if (!subs.empty() && given.size() > 1 && std::find(subs.begin(), subs.end(), given[1]) == subs.end())
      return *err = unknown(given[0] + " command", given[1], subs, "agent " + given[0]), 2;
  }

  std::vector<std::string> reversed(argv.rbegin(), argv.rend());  // CLI11 takes them back to front
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    *out = app.help();  // the root hands it to the chosen verb, whose usage reads "agent VERB"
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    *out = app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::ExtrasError&) {
    CLI::App* sub = chosen(&app);
    auto extras = app.remaining(true);
    std::string word = extras.empty() ? "?" : extras.front();
    for (const auto& e : extras)
      if (e.starts_with("-")) {
        word = e;
        break;
      }
    std::string verb = verb_of(sub);
    *err = "agent: " + explain_extra(&app, sub, word) + "\n(see agent " + (verb.empty() ? "" : verb + " ") + "--help)";
    return 2;
  } catch (const CLI::ArgumentMismatch& e) {
    CLI::App* sub = chosen(&app);
    std::string what = std::string(e.what()).starts_with("-") ? e.what() : "wrong number of arguments (" + usage_of(sub) + ")";
    std::string verb = verb_of(sub);
    *err = "agent: " + (verb.empty() ? "" : verb + ": ") + what + "\n(see agent " + (verb.empty() ? "" : verb + " ") + "--help)";
    return 2;
  } catch (const CLI::RequiredError& e) {
    CLI::App* sub = chosen(&app);
    std::string v = verb_of(sub);
    auto subs = names_of(sub);
    if (!subs.empty()) {
      std::string list;
      for (const auto& k : subs) list += (list.empty() ? "" : " or ") + k;
      *err = "agent: " + v + ": say " + list + "\n(see agent " + v + " --help)";
    } else {
      *err = "agent: " + v + ": missing arguments (" + usage_of(sub) + ")\n(see agent " + v + " --help)";
    }
    return 2;
  } catch (const CLI::ParseError& e) {
    std::string verb = verb_of(chosen(&app));
    *err = "agent: " + (verb.empty() ? "" : verb + ": ") + e.what() + "\n(see agent " + (verb.empty() ? "" : verb + " ") + "--help)";
    return 2;
  }
  if (version) {
    *out = std::string("agent ") + AGENT_VERSION + "\n";
    return 0;
  }
  CLI::App* sub = chosen(&app);
  if (sub == &app) {
    *err = app.help();
    return 2;
  }
  a->verb = verb_of(sub);
  if (a->verb == "rollback" && !a->positional.empty() && std::isdigit(static_cast<unsigned char>(a->positional[0][0]))) {
    const std::string& n = a->positional[0];
    bool whole = n.size() <= 4 && std::all_of(n.begin(), n.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    if (!whole || std::stol(n) < 1 || std::stol(n) > 1000)
      return *err = "agent: rollback: N must be a whole number from 1 to 1000, not \"" + n + "\"\n(see agent rollback --help)", 2;
    if (a->to) return *err = "agent: rollback takes N or --to ID, not both\n(see agent rollback --help)", 2;
  }
  if (!lines.empty()) a->lines = std::stol(lines);
  if (!slot.empty()) a->slot = std::stol(slot);
  if (!since.empty()) {
    std::string why;
    a->since_s = static_cast<long>(base::parse_duration(since, &why)->count() / 1000);
  }
  if (!wait.empty()) {
    std::string why;
    a->wait_s = static_cast<long>(base::parse_duration(wait, &why)->count() / 1000);
  }
  return -1;
}

}  // namespace agent
