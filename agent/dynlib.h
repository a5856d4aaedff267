#pragma once
// Libraries the daemon needs only for some work (libgit2 for git deploys, libcurl for alerts)
// are opened on first use, not linked: linked, they and their dependencies (OpenSSL, GnuTLS,
// Kerberos, LDAP...) would be mapped and initialised in every agent process, which costs about
// 9 MB of resident memory for nothing on a host whose apps neither push nor alert (see
// bench/footprint.sh). systemd opens its optional libraries the same way.
//
// A file that uses one declares, inside its own namespace, a pointer named after each function
// it calls (AGENT_DL_DECLARE), so the calls read as usual; a function left out is an undefined
// reference at link time, since the library is not linked.
#include <dlfcn.h>

#include <mutex>
#include <string>

#define AGENT_DL_DECLARE(fn) decltype(&::fn) fn = nullptr;
#define AGENT_DL_RESOLVE(fn)                                                   \
  if (!(fn = reinterpret_cast<decltype(fn)>(dlsym(handle, #fn)))) {           \
    err = std::string(#fn) + " not found in " + soname;                        \
    return false;                                                              \
  }

namespace agent::dynlib {

// dlopen()s `soname` once and runs `resolve(handle, err)` to fill the pointers; the outcome,
// and its error ("cannot load libgit2.so.1.5: ..."), is kept for every later caller.
template <typename Resolve>
bool open_once(std::once_flag& once, bool& ok, std::string& error, const char* soname, Resolve resolve) {
  std::call_once(once, [&] {
    void* handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* e = dlerror();
      error = std::string("cannot load ") + soname + ": " + (e ? e : "unknown error");
      return;
    }
    std::string err;
    ok = resolve(handle, err);
    if (!ok) error = "cannot use " + std::string(soname) + ": " + err;
  });
  return ok;
}

}  // namespace agent::dynlib
