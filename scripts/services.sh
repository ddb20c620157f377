#!/usr/bin/env bash
# Start the local services the test suite talks to (Mosquitto on 127.0.0.1:1883, PostgreSQL on
# 127.0.0.1:5432) where they are installed but not running.  Prints what it did; never fails the build
# for a service that is not installed (the tests that need it then say so and fail clearly).
set -u
port_open() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && exec 3>&- 3<&-; }

if port_open 1883; then
  echo "services: mosquitto already answers on 127.0.0.1:1883"
elif command -v mosquitto >/dev/null 2>&1; then
  if [ -f /etc/mosquitto/mosquitto.conf ]; then mosquitto -d -c /etc/mosquitto/mosquitto.conf; else mosquitto -d; fi
  for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done
  port_open 1883 && echo "services: started mosquitto" || echo "services: mosquitto did not start"
else
  echo "services: mosquitto is not installed"
fi

if port_open 5432; then
  echo "services: postgresql already answers on 127.0.0.1:5432"
elif command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 100); do port_open 5432 && break; sleep 0.1; done
  port_open 5432 && echo "services: started postgresql" || echo "services: postgresql did not start"
else
  echo "services: postgresql is not installed"
fi
exit 0
