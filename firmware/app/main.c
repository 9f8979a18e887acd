/* Firmware entry: the port brings the board up, the session serves the host forever. */
#include "port.h"
#include "session.h"

int main(void)
{
    port_init();
    session_run();
    return 0;
}
