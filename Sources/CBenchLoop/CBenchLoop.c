#include "CBenchLoop.h"
