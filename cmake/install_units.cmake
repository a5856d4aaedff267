# Runs at install time (install(SCRIPT)), so that the systemd units name the prefix actually
# installed to, `cmake --install build --prefix DIR` included, and /etc is used for /usr.
# AGENT_SRC and AGENT_CONFIG_OVERRIDE are set by the install(CODE) before it.
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(sysconf "/etc")
else()
  set(sysconf "${prefix}/etc")
endif()
set(CMAKE_INSTALL_FULL_BINDIR "${prefix}/bin")
set(CMAKE_INSTALL_FULL_DOCDIR "${prefix}/share/doc/deploy-agent")
if(AGENT_CONFIG_OVERRIDE)
  set(AGENT_CONFIG "${AGENT_CONFIG_OVERRIDE}")
else()
  set(AGENT_CONFIG "${sysconf}/agent/agent.toml")
endif()

set(unitdir "$ENV{DESTDIR}${prefix}/lib/systemd/system")
file(MAKE_DIRECTORY "${unitdir}")
foreach(unit agent.service agent.socket)
  configure_file("${AGENT_SRC}/systemd/${unit}.in" "${unitdir}/${unit}" @ONLY)
  message(STATUS "Installing: ${unitdir}/${unit}")
endforeach()
# The example config, beside where the real one goes; never over an existing agent.toml.
file(INSTALL "${AGENT_SRC}/examples/two-apps/agent.toml" DESTINATION "$ENV{DESTDIR}${sysconf}/agent"
     RENAME agent.toml.example)
