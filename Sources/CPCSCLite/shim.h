#ifndef ONECARD_CPCSCLITE_SHIM_H
#define ONECARD_CPCSCLITE_SHIM_H

// pkg-config libpcsclite puts /usr/include/PCSC on the include path.
#include <winscard.h>
#include <reader.h>
#include <pcsclite.h>
#include <wintypes.h>

// Each wrapper exists because the macro it stands for does not import into Swift:
// address-of macros (SCARD_PCI_*) and function-like macros (SCARD_CTL_CODE, SCARD_ATTR_VALUE).

/// The T=0 protocol control information (SCARD_PCI_T0 is `&g_rgSCardT0Pci`).
static inline const SCARD_IO_REQUEST *onecard_pci_t0(void) { return SCARD_PCI_T0; }
/// The T=1 protocol control information (SCARD_PCI_T1).
static inline const SCARD_IO_REQUEST *onecard_pci_t1(void) { return SCARD_PCI_T1; }
/// The raw protocol control information (SCARD_PCI_RAW).
static inline const SCARD_IO_REQUEST *onecard_pci_raw(void) { return SCARD_PCI_RAW; }

/// SCARD_CTL_CODE(code): the control code for SCardControl (pcsc-lite: 0x42000000 + code).
static inline DWORD onecard_ctl_code(DWORD code) { return SCARD_CTL_CODE(code); }

/// SCARD_AUTOALLOCATE is `(DWORD)(-1)`; a cast macro imports unreliably.
static inline DWORD onecard_autoallocate(void) { return SCARD_AUTOALLOCATE; }

/// Reader attributes used by `cardctl info` (SCARD_ATTR_VALUE is function-like).
static inline DWORD onecard_attr_vendor_name(void) { return SCARD_ATTR_VENDOR_NAME; }
static inline DWORD onecard_attr_vendor_ifd_version(void) { return SCARD_ATTR_VENDOR_IFD_VERSION; }
static inline DWORD onecard_attr_vendor_ifd_serial(void) { return SCARD_ATTR_VENDOR_IFD_SERIAL_NO; }
static inline DWORD onecard_attr_atr_string(void) { return SCARD_ATTR_ATR_STRING; }
static inline DWORD onecard_attr_channel_id(void) { return SCARD_ATTR_CHANNEL_ID; }
static inline DWORD onecard_attr_maxinput(void) { return SCARD_ATTR_MAXINPUT; }

#endif
