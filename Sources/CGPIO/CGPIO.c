// Everything CGPIO offers is static inline in include/CGPIO.h; SwiftPM needs one source file for a C target.
#include "CGPIO.h"
