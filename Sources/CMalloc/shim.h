#ifndef ONECARD_CMALLOC_SHIM_H
#define ONECARD_CMALLOC_SHIM_H

// glibc's <malloc.h>, which Swift's Glibc module does not include: cardd returns its freed arena pages after a tap
// (HardwareNotes "cardd's memory").
#include <malloc.h>

#endif
