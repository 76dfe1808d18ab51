# A Rack app served by Debian's puma in cluster mode under baton, unmodified.
#
# puma takes systemd's sockets itself (LISTEN_FDS, checked against
# LISTEN_PID): a --bind naming the socket's address uses the passed socket
# ("Activated tcp://..." in its log) instead of binding its own, so it must
# name the same address. With ruby-sd-notify installed, puma's master sends
# READY=1 once its workers booted. SIGTERM is its graceful stop.
#
#   baton run --workers 2 -- puma --workers 2 --bind tcp://127.0.0.1:9292 --dir /srv/puma /srv/puma/config.ru
#
# The answer names the baton slot and the pid baton lists for it (puma's
# master, the parent of the worker answering).
run ->(env) { [200, { "Content-Type" => "text/plain" }, ["puma slot #{ENV['BATON_WORKER']} pid #{Process.ppid}\n"]] }
