# The agent's own packages: `cpack -G DEB` and `cpack -G RPM` in the build tree (or the
# `package` target). What `cmake --install` installs, for prefix /usr: the stripped binary, the
# Node shim, the units, /etc/agent/agent.toml.example (a conffile, %config(noreplace): never
# over the user's edits, and agent.toml itself is never shipped), the man pages agent(1) and
# agent.toml(5), bash completion, the README, copyright and changelog. The maintainer scripts
# (cmake/package/) never enable or start the service, run `agent upgrade` on an upgrade while
# the agent runs (every worker kept), stop it on removal, and leave the state directory on purge.

# Man pages and the changelog, compressed as Debian wants them (-n: no time stamp inside, the
# same bytes for the same text).
# The project has no public address yet: a build for distribution sets its own.
set(AGENT_PACKAGE_CONTACT "deploy-agent developers <deploy-agent@localhost>" CACHE STRING "Maintainer of the .deb and .rpm")
set(AGENT_PKG_DIR ${CMAKE_CURRENT_BINARY_DIR}/package)
string(TIMESTAMP AGENT_CHANGELOG_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
configure_file(cmake/package/changelog.in ${AGENT_PKG_DIR}/changelog @ONLY)
set(agent_gz)
foreach(pair "docs/man/agent.1;man/agent.1.gz" "docs/man/agent.toml.5;man/agent.toml.5.gz" "${AGENT_PKG_DIR}/changelog;doc/changelog.gz")
  list(GET pair 0 src)
  list(GET pair 1 out)
  if(NOT IS_ABSOLUTE ${src})
    set(src ${CMAKE_CURRENT_SOURCE_DIR}/${src})
  endif()
  add_custom_command(OUTPUT ${AGENT_PKG_DIR}/${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${AGENT_PKG_DIR}/man ${AGENT_PKG_DIR}/doc
    COMMAND sh -c "gzip -9nc '${src}' > '${AGENT_PKG_DIR}/${out}'"
    DEPENDS ${src} VERBATIM)
  list(APPEND agent_gz ${AGENT_PKG_DIR}/${out})
endforeach()
add_custom_target(agent_docs ALL DEPENDS ${agent_gz})
install(FILES ${AGENT_PKG_DIR}/man/agent.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${AGENT_PKG_DIR}/man/agent.toml.5.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES scripts/completion/agent DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
install(FILES cmake/package/copyright ${AGENT_PKG_DIR}/doc/changelog.gz DESTINATION ${CMAKE_INSTALL_DOCDIR})
# What lintian says and why it stays (cmake/package/lintian-overrides).
install(FILES cmake/package/lintian-overrides DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides RENAME deploy-agent)

set(CPACK_PACKAGE_NAME deploy-agent)
set(CPACK_PACKAGE_VENDOR "deploy-agent developers")
set(CPACK_PACKAGE_CONTACT "${AGENT_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "zero-downtime deploys of apps on one Linux host, and fleets")
set(CPACK_PACKAGE_DESCRIPTION "agent watches an app's source directory (an RPM or yum install) or takes
a git push, stages each release into a versioned directory behind a current
symlink, builds the workers' launch environment explicitly and checks it, then
swaps the workers one batch at a time with no capacity loss and no dropped
request. It alerts by email when a drain stalls, rolls back by itself when a
release goes bad after it went live, and rolls fleets of hosts a few at a time
through etcd.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES TRUE)
set(CPACK_PACKAGE_FILE_NAME_IGNORED TRUE)

# .deb: dpkg-shlibdeps finds the linked libraries; libgit2 and libcurl are loaded by name at run
# time (their SONAMEs are compiled in), so their packages are named here, found from the files.
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(agent_dlopen_debs)
foreach(lib ${AGENT_LIBGIT2_FILE} ${AGENT_LIBCURL_FILE})
  get_filename_component(real ${lib} REALPATH)
  execute_process(COMMAND dpkg -S ${real} OUTPUT_VARIABLE owner ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  string(REGEX REPLACE "^([^:]+):.*" "\\1" owner "${owner}")
  if(owner)
    list(APPEND agent_dlopen_debs ${owner})
  endif()
endforeach()
list(JOIN agent_dlopen_debs ", " CPACK_DEBIAN_PACKAGE_DEPENDS)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "nodejs, git")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/deb/postinst ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/deb/prerm
  ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/deb/postrm ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

# .rpm, for the yum hosts of the seeds: the same files, the same scriptlets' intent.
set(CPACK_RPM_FILE_NAME RPM-DEFAULT)
set(CPACK_RPM_PACKAGE_LICENSE "All rights reserved")
set(CPACK_RPM_PACKAGE_GROUP "System Environment/Daemons")
set(CPACK_RPM_PACKAGE_REQUIRES "${AGENT_LIBGIT2_SONAME}()(64bit), ${AGENT_LIBCURL_SONAME}()(64bit)")  # loaded by name
set(CPACK_RPM_USER_FILELIST "%config(noreplace) /etc/agent/agent.toml.example")
set(CPACK_RPM_EXCLUDE_FROM_AUTO_FILELIST_ADDITION /etc /etc/agent /usr/lib/systemd /usr/lib/systemd/system
  /usr/share/bash-completion /usr/share/bash-completion/completions /usr/share/man /usr/share/man/man1 /usr/share/man/man5)
set(CPACK_RPM_POST_INSTALL_SCRIPT_FILE ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/rpm/post)
set(CPACK_RPM_POST_TRANS_SCRIPT_FILE ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/rpm/posttrans)
set(CPACK_RPM_PRE_UNINSTALL_SCRIPT_FILE ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/rpm/preun)
set(CPACK_RPM_POST_UNINSTALL_SCRIPT_FILE ${CMAKE_CURRENT_SOURCE_DIR}/cmake/package/rpm/postun)
set(CPACK_RPM_SPEC_MORE_DEFINE "%define _build_id_links none")

set(CPACK_GENERATOR DEB RPM)
include(CPack)
