#if os(Linux)
import CGPIO
@testable import CardDaemon
import Foundation
import Glibc
import Testing

/// The meter's reading thread against a fake character device: a pipe carrying `gpio_v2_line_event`s as the kernel
/// writes them (this machine's kernel has no GPIOLIB, gpio-sim or gpio-mockup).
@Suite struct GPIOEventTests {
    func event(_ id: UInt32, sequence: UInt32) -> gpio_v2_line_event {
        var event = gpio_v2_line_event()
        event.timestamp_ns = UInt64(sequence) * 1_000_000
        event.id = id
        event.offset = 27
        event.seqno = sequence
        event.line_seqno = sequence
        return event
    }

    func waitFor(_ expected: Int, _ meter: GPIOFlowMeter) async throws -> Int {
        var total = 0
        for _ in 0..<200 where total < expected {
            total += try meter.takePulses()
            if total < expected { try await Task.sleep(for: .milliseconds(5)) }
        }
        return total
    }

    @Test func edgeEventsReadOnTheMetersThreadBecomePulses() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let meter = try GPIOFlowMeter(request: GPIOLineRequest(adopting: fds[0], path: "fake-gpiochip"))
        var events = [event(1, sequence: 1), event(2, sequence: 2), event(1, sequence: 3), event(1, sequence: 8)]
        let written = events.withUnsafeMutableBytes { write(fds[1], $0.baseAddress, $0.count) }
        #expect(written == 4 * 48)
        // 1 + 0 (falling) + 1 + (1 + 4 lost in an overflow) = 7.
        #expect(try await waitFor(7, meter) == 7)
        #expect(meter.droppedEvents == 4)
        #expect(try meter.takePulses() == 0)
        close(fds[1])
    }

    @Test func aReadErrorIsReportedByTakePulses() async throws {
        // A directory fd: poll says readable, read fails with EISDIR.
        let directory = open("/", O_RDONLY | O_DIRECTORY)
        let meter = try GPIOFlowMeter(request: GPIOLineRequest(adopting: directory, path: "fake-gpiochip"))
        var failed: (any Error)?
        for _ in 0..<200 where failed == nil {
            do { _ = try meter.takePulses(); try await Task.sleep(for: .milliseconds(5)) } catch { failed = error }
        }
        #expect((failed as? GPIOError)?.code == .readFailed)
    }
}
#endif
