#include "CBenchLoop.h"

#include <time.h>
#include <winscard.h>

long onecard_bench_c_loop(const char *reader, const unsigned char *apdu, size_t length, long count, double *seconds) {
    SCARDCONTEXT context;
    SCARDHANDLE card;
    DWORD protocol;
    LONG rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &context);
    if (rv != SCARD_S_SUCCESS) return rv;
    rv = SCardConnect(context, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &card, &protocol);
    if (rv != SCARD_S_SUCCESS) {
        SCardReleaseContext(context);
        return rv;
    }
    const SCARD_IO_REQUEST *pci = protocol == SCARD_PROTOCOL_T0 ? SCARD_PCI_T0 : SCARD_PCI_T1;
    unsigned char response[258];
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < count; i++) {
        DWORD responseLength = sizeof response;
        rv = SCardTransmit(card, pci, apdu, (DWORD)length, NULL, response, &responseLength);
        if (rv != SCARD_S_SUCCESS) break;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    *seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
    SCardDisconnect(card, SCARD_LEAVE_CARD);
    SCardReleaseContext(context);
    return rv;
}
