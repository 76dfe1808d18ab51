# puma under baton (see config.ru): its cluster mode, and a graceful stop
# that serves what is already waiting.
workers 2
# At shutdown, first accept and serve the connections already queued on the
# socket, and every request already read. It narrows, but does not close, a
# window in which a connection puma had just accepted is closed by its
# SIGTERM unanswered (compat/: without it, one fresh request lost in the one
# run of about 3500 requests tried; with it, one in about eight such runs).
drain_on_shutdown
