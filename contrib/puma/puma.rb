# puma under baton (see config.ru): its cluster mode, and a graceful stop
# that serves what is already waiting.
workers 2
# At shutdown, first accept and serve the connections already queued on the
# socket, and every request already read.
drain_on_shutdown

# And answer the connections accepted just before the stop. puma's stop
# (5.6, Debian 12's, to 6.6, Debian 13's) closes every connection from which
# it has parsed nothing yet (Client#can_close?), as it should an idle
# kept-alive one; but a fresh connection the kernel handed over an instant
# before SIGTERM, its request still on the way, is then closed unanswered.
# compat/: 1 to 5 fresh requests lost in 12 rollouts without this, 0 with it.
# A connection that has not served a request yet goes to the thread pool
# instead, which waits for its request (first_data_timeout, 30 s, bounds a
# client that sends nothing; so does baton's --drain-timeout).
raise "puma.rb: Puma::Client#can_close? is gone; see the comment above it" unless Puma::Client.method_defined?(:can_close?)
module AnswerFreshConnectionsAtStop
  def can_close?
    super && @requests_served > 0
  end
end
Puma::Client.prepend(AnswerFreshConnectionsAtStop)
