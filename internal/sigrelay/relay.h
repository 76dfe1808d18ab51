// The environment variable naming the relay in a re-executed image: its
// constructor reads it before any Go code runs. relay_cgo.go's envInC
// and a test keep it equal to the Go constant Env.
#define BATON_RELAY_ENV "BATON_HANDOFF_SIGNALS"

int batonRelayCatch(int fd, const int *sigs, int n);
void batonRelayRelease(void);
void batonRelayHandBack(void);
int batonRelayAllThreads(int block);
int batonBroadcastSignal(void);
