// The system zlib (Debian's zlib1g-dev): used for CRC-32 of write-ahead-log records.
#include <zlib.h>
