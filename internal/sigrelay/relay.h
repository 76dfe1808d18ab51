#define BATON_NHELD 5
#define BATON_RELAY_ENV "BATON_HANDOFF_SIGNAL_FDS"

extern const int batonHeld[BATON_NHELD];

int batonRelayCatch(int fd);
void batonRelayRelease(void);
void batonRelayHandBack(void);
int batonRelayAllThreads(int block);
int batonBroadcastSignal(void);
