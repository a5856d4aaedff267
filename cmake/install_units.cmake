# Runs at install time (install(SCRIPT)), so that the systemd units name the prefix actually
# installed to, `cmake --install build --prefix DIR` included, and /etc is used for /usr.
# AGENT_SRC, AGENT_BIN, AGENT_BINDIR, AGENT_DOCDIR and AGENT_CONFIG_OVERRIDE are set by the
# install(CODE) before it.
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(sysconf "/etc")
else()
  set(sysconf "${prefix}/etc")
endif()
set(CMAKE_INSTALL_FULL_BINDIR "${prefix}/${AGENT_BINDIR}")
set(CMAKE_INSTALL_FULL_DOCDIR "${prefix}/${AGENT_DOCDIR}")
if(AGENT_CONFIG_OVERRIDE)
  set(AGENT_CONFIG "${AGENT_CONFIG_OVERRIDE}")
else()
  set(AGENT_CONFIG "${sysconf}/agent/agent.toml")
endif()

# Rendered into the build tree, then installed with file(INSTALL): it applies DESTDIR itself
# and records the files in install_manifest.txt.
foreach(unit agent.service agent.socket)
  configure_file("${AGENT_SRC}/systemd/${unit}.in" "${AGENT_BIN}/systemd/${unit}" @ONLY)
endforeach()
file(INSTALL "${AGENT_BIN}/systemd/agent.service" "${AGENT_BIN}/systemd/agent.socket"
     DESTINATION "${prefix}/lib/systemd/system")
# The example config, beside where the real one goes; never over an existing agent.toml.
file(INSTALL "${AGENT_SRC}/examples/two-apps/agent.toml" DESTINATION "${sysconf}/agent" RENAME agent.toml.example)
