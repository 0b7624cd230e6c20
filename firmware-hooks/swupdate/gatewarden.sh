#!/bin/sh
# SWUpdate shellscript (sw-description: scripts: { filename = "gatewarden.sh"; type = "shellscript"; })
# SWUpdate calls it with preinst, postinst and postfailure; a non-zero exit fails the update.
# GATEWARDEN_RELEASE_DIR names where the artifact's gatewarden-release.json and files are.
case "$1" in
  preinst|postinst|postfailure) exec ${GATEWARDEN:-gatewarden} update hook swupdate "$1" ;;
  *) exit 0 ;;
esac
