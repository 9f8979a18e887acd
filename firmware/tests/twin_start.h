/* What the twin programs' start-up (twin_start.c) offers them: main's return value is the exit status. */
#ifndef TWIN_START_H
#define TWIN_START_H

int main(void);
void twin_exit(int failed); /* ends QEMU: 0 = exit status 0, else 1 */

#endif
