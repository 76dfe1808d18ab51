# puma under baton (see config.ru): its cluster mode, and a graceful stop
# that serves what is already waiting.
workers 2
# At shutdown, first accept and serve the connections already queued on the
# socket, and every request already read: without it, a connection puma had
# just accepted could be reset by its SIGTERM (seen in compat/: one fresh
# request in a run of about 3500 over 2 rollouts; none in 5 runs with it).
drain_on_shutdown
