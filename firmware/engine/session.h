/* Device side of a session (docs/protocol.md): answers PING, runs START, honours STOP. */
#ifndef SESSION_H
#define SESSION_H

#include "wire.h"

/* Handles one received frame while idle (may run a whole training run). */
void session_handle(const frame_t *f);
/* Reads available bytes; returns 1 if a frame was handled. Never blocks. */
int session_poll(void);
/* Forever: poll the port and handle commands. */
void session_run(void);

#endif
