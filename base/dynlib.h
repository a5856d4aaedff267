// Libraries the daemon needs only for some work (libgit2 for git deploys, libcurl for alerts)
// are opened on first use, not linked: linked, they and their dependencies (OpenSSL, GnuTLS,
// Kerberos, LDAP...) would be mapped and initialised in every agent process, which costs about
// 9 MB of resident memory for nothing on a host whose apps neither push nor alert (see
// bench/footprint.sh). systemd opens its optional libraries the same way.
//
// A file that uses one declares, inside its own namespace, a pointer named after each function
// it calls (AGENT_DL_DECLARE), so the calls read as usual; a function left out is an undefined
// reference at link time, since the library is not linked.
#pragma once

#include <dlfcn.h>

#include <mutex>
#include <string>

#define AGENT_DL_DECLARE(fn) decltype(&::fn) fn = nullptr;
#define AGENT_DL_RESOLVE(fn)                                                   \
  if (!(fn = reinterpret_cast<decltype(fn)>(dlsym(handle, #fn)))) {           \
    err = std::string(#fn) + " not found in " + soname;                        \
    return false;                                                              \
  }

namespace base::dynlib {

// dlopen()s `soname` and runs `resolve(handle, err)` to fill the pointers, once it works: a
// failure ("cannot load libcurl.so.4: ...") is returned to this caller and tried again by the
// next (the library may be installed meanwhile); a success is kept for every later caller.
template <typename Resolve>
bool open_once(std::mutex& mu, bool& ok, const char* soname, Resolve resolve, std::string* error) {
  std::lock_guard<std::mutex> lock(mu);
  if (ok) return true;
  void* handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = dlerror();  // names the file already
    *error = std::string("cannot load ") + (e ? e : soname);
    return false;
  }
  std::string err;
  ok = resolve(handle, err);  // the handle stays open either way: the pointers may be half set
  if (!ok) *error = "cannot use " + std::string(soname) + ": " + err;
  return ok;
}

}  // namespace base::dynlib
