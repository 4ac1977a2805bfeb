#ifndef ONECARD_CBENCHLOOP_H
#define ONECARD_CBENCHLOOP_H

#include <stddef.h>

/// The benchmark's floor: connects to `reader` with plain pcsc-lite calls and sends `apdu` `count` times
/// in a tight loop of SCardTransmit. Returns 0 and the elapsed seconds of the loop alone, or the PC/SC error code.
long onecard_bench_c_loop(const char *reader, const unsigned char *apdu, size_t length, long count, double *seconds);

#endif
