#!/usr/bin/env bash
# Container entrypoint: source ROS 2 and the vla_ros workspace, then exec the given command so that
# docker stop's signal reaches it directly (ros2 launch then shuts its nodes down cleanly).
# Docker health checks bypass ENTRYPOINT, so the compose file's health checks call it explicitly.
set -o pipefail

ros_setup="${ROS_ROOT:-/opt/ros/${ROS_DISTRO:-humble}}/setup.bash"
ws_setup="${VLA_WS:-/opt/vla_ws}/install/setup.bash"
for setup in "${ros_setup}" "${ws_setup}"; do
  if [[ ! -f "${setup}" ]]; then
    echo "entrypoint: ${setup} not found (set ROS_ROOT / VLA_WS or rebuild the image)" >&2
    exit 127
  fi
  # shellcheck disable=SC1090
  source "${setup}"
done

if [[ $# -eq 0 ]]; then
  echo "entrypoint: no command given" >&2
  exit 64
fi
exec "$@"
