import CGPIO
import CardDaemon
import Foundation
import Testing

@Suite struct ValveTests {
    @Test func simulatedValveRecordsLevelsAndFails() async throws {
        let valve = SimulatedValve()
        #expect(!valve.isOpen)
        try await valve.set(open: true)
        #expect(valve.isOpen)
        try valve.closeNow()
        #expect(valve.history == [true, false])
        valve.fail("relay stuck")
        await #expect(throws: GPIOError.self) { try await valve.set(open: true) }
        #expect(!valve.isOpen)
    }

    @Test func simulatedMeterHandsOutInjectedPulsesOnce() throws {
        let meter = SimulatedFlowMeter()
        meter.inject(7)
        meter.inject(3)
        #expect(try meter.takePulses() == 10)
        #expect(try meter.takePulses() == 0)
        #expect(meter.totalPulses == 10)
    }

    @Test func pulseCounterCountsRisingEdgesAndDroppedEvents() {
        var counter = PulseCounter()
        #expect(counter.count(edgeID: 1, lineSequence: 1) == 1)
        #expect(counter.count(edgeID: 1, lineSequence: 2) == 1)
        #expect(counter.count(edgeID: 2, lineSequence: 3) == 0)  // a falling edge is no pulse
        #expect(counter.count(edgeID: 1, lineSequence: 7) == 4)  // 3 events lost in an overflow, each a pulse
        #expect(counter.dropped == 3)
    }

    #if os(Linux)
    @Test func structSizesMatchTheKernelABI() {
        // The ioctl number encodes the request's size: 0xC250B407 → 0x250 = 592 bytes (daemon.md).
        #expect(onecard_gpio_v2_get_line_ioctl() == 0xC250_B407)
        #expect(MemoryLayout<gpio_v2_line_request>.size == onecard_gpio_sizeof_line_request())
        #expect(MemoryLayout<gpio_v2_line_request>.size == 592)
        #expect(MemoryLayout<gpio_v2_line_event>.size == onecard_gpio_sizeof_line_event())
        #expect(MemoryLayout<gpio_v2_line_event>.size == 48)
        #expect(MemoryLayout<gpio_v2_line_values>.size == onecard_gpio_sizeof_line_values())
        #expect((onecard_gpio_v2_line_set_values_ioctl() >> 16) & 0x3FFF == 16)
        #expect(onecard_gpio_line_event_rising_edge() == PulseCounter.risingEdge)
    }

    @Test func requestsAreFilledForTheValveAndTheMeter() {
        var output = gpio_v2_line_request()
        onecard_gpio_request_output(&output, 17, "cardd-valve", 1, 0)
        #expect(output.offsets.0 == 17 && output.num_lines == 1)
        #expect(output.config.flags == UInt64(GPIO_V2_LINE_FLAG_OUTPUT.rawValue | GPIO_V2_LINE_FLAG_ACTIVE_LOW.rawValue))
        #expect(output.config.num_attrs == 1 && output.config.attrs.0.attr.id == GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES.rawValue)
        #expect(output.config.attrs.0.attr.values == 0)  // granted closed
        let consumer = withUnsafeBytes(of: output.consumer) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        #expect(consumer == "cardd-valve")
        var input = gpio_v2_line_request()
        onecard_gpio_request_edges(&input, 27, "cardd-meter", 0, 1, 500, 64)
        #expect(input.config.flags == UInt64(GPIO_V2_LINE_FLAG_INPUT.rawValue | GPIO_V2_LINE_FLAG_EDGE_RISING.rawValue | GPIO_V2_LINE_FLAG_BIAS_PULL_UP.rawValue))
        #expect(input.config.attrs.0.attr.debounce_period_us == 500 && input.event_buffer_size == 64)
    }

    @Test func aMissingChipIsATypedError() {
        #expect { try GPIOValve(chip: "/dev/gpiochip-none", line: 1, activeLow: false) } throws: { error in
            (error as? GPIOError)?.code == .chipMissing && (error as? GPIOError)?.call == "open"
        }
        #expect { try GPIOFlowMeter(chip: "/dev/gpiochip-none", line: 2, activeLow: false, pullUp: true, debounceMicroseconds: 0) } throws: { error in
            (error as? GPIOError)?.code == .chipMissing
        }
    }

    @Test func aFileThatIsNoChipIsRefusedByTheIoctl() {
        #expect { try GPIOValve(chip: "/dev/null", line: 1, activeLow: false) } throws: { error in
            (error as? GPIOError)?.code == .notAChip && (error as? GPIOError)?.call == "ioctl(GPIO_V2_GET_LINE_IOCTL)"
        }
    }
    #endif
}
