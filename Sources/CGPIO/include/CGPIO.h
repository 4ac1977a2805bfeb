#ifndef ONECARD_CGPIO_H
#define ONECARD_CGPIO_H

// The Linux GPIO character device, uAPI v2 (<linux/gpio.h>, Linux 5.10+). Only CardDaemon's GPIO backend imports it.
#ifdef __linux__
#include <linux/gpio.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// The ioctl numbers are _IOWR(...) macros, which do not import into Swift.

/// GPIO_V2_GET_LINE_IOCTL: on the chip fd, requests lines; the kernel fills in `fd` (0xC250B407).
static inline unsigned long onecard_gpio_v2_get_line_ioctl(void) { return GPIO_V2_GET_LINE_IOCTL; }
/// GPIO_V2_LINE_SET_VALUES_IOCTL: on a line request fd, sets output lines ({bits, mask}).
static inline unsigned long onecard_gpio_v2_line_set_values_ioctl(void) { return GPIO_V2_LINE_SET_VALUES_IOCTL; }
/// GPIO_V2_LINE_GET_VALUES_IOCTL: on a line request fd, reads the lines in `mask`.
static inline unsigned long onecard_gpio_v2_line_get_values_ioctl(void) { return GPIO_V2_LINE_GET_VALUES_IOCTL; }
/// GPIO_GET_CHIPINFO_IOCTL: on the chip fd, the chip's name, label and line count (shared by v1 and v2).
static inline unsigned long onecard_gpio_get_chipinfo_ioctl(void) { return GPIO_GET_CHIPINFO_IOCTL; }

// The request struct holds fixed arrays and a union, which Swift imports as tuples: filling it here is shorter and
// keeps the field layout in the language that defines it.

/// A request for one output line (the valve relay), driven to `initial` (logical: 1 = active) from the moment the
/// kernel grants it, so the line never glitches to the other level.
static inline void onecard_gpio_request_output(struct gpio_v2_line_request *request, uint32_t offset,
                                               const char *consumer, int active_low, int initial) {
    memset(request, 0, sizeof *request);
    request->offsets[0] = offset;
    request->num_lines = 1;
    strncpy(request->consumer, consumer, GPIO_MAX_NAME_SIZE - 1);
    request->config.flags = GPIO_V2_LINE_FLAG_OUTPUT | (active_low ? GPIO_V2_LINE_FLAG_ACTIVE_LOW : 0);
    request->config.num_attrs = 1;
    request->config.attrs[0].attr.id = GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES;
    request->config.attrs[0].attr.values = initial ? 1 : 0;
    request->config.attrs[0].mask = 1;  // bit 0 = offsets[0]
}

/// A request for one input line with edge events (the flow meter): rising edges (logical, so after active-low),
/// optional pull-up, optional debounce (0 = none), `buffer` events buffered in the kernel (0 = the default, 16).
static inline void onecard_gpio_request_edges(struct gpio_v2_line_request *request, uint32_t offset,
                                              const char *consumer, int active_low, int pull_up,
                                              uint32_t debounce_us, uint32_t buffer) {
    memset(request, 0, sizeof *request);
    request->offsets[0] = offset;
    request->num_lines = 1;
    request->event_buffer_size = buffer;
    strncpy(request->consumer, consumer, GPIO_MAX_NAME_SIZE - 1);
    request->config.flags = GPIO_V2_LINE_FLAG_INPUT | GPIO_V2_LINE_FLAG_EDGE_RISING
        | (active_low ? GPIO_V2_LINE_FLAG_ACTIVE_LOW : 0) | (pull_up ? GPIO_V2_LINE_FLAG_BIAS_PULL_UP : 0);
    if (debounce_us > 0) {
        request->config.num_attrs = 1;
        request->config.attrs[0].attr.id = GPIO_V2_LINE_ATTR_ID_DEBOUNCE;
        request->config.attrs[0].attr.debounce_period_us = debounce_us;
        request->config.attrs[0].mask = 1;
    }
}

/// The sizes the kernel ABI fixes (tests compare them with Swift's view of the imported structs).
static inline size_t onecard_gpio_sizeof_line_request(void) { return sizeof(struct gpio_v2_line_request); }
static inline size_t onecard_gpio_sizeof_line_event(void) { return sizeof(struct gpio_v2_line_event); }
static inline size_t onecard_gpio_sizeof_line_values(void) { return sizeof(struct gpio_v2_line_values); }
static inline uint32_t onecard_gpio_line_event_rising_edge(void) { return GPIO_V2_LINE_EVENT_RISING_EDGE; }
#endif

#endif
