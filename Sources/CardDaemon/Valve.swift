import Foundation

/// The water valve (a relay driving a normally-closed solenoid: unpowered = closed). The water machine decides; the
/// integrator performs its `.openValve` / `.closeValve` actions through this.
public protocol Valve: AnyObject, Sendable {
    /// Drives the valve; returns once the line is set. A failure is the machine's `.valveFailed`.
    func set(open: Bool) async throws
    /// Closes synchronously, for paths that cannot await (a cancelled task, shutdown, deinit).
    func closeNow() throws
    /// The level last set (`false` before the first `set`).
    var isOpen: Bool { get }
}

/// The flow meter's pulse count. The integrator polls it (on every tick) and sends the machine `.pulses(n)`.
public protocol FlowMeter: AnyObject, Sendable {
    /// The pulses counted since the last call; throws when the meter stopped working (the machine's `.fault`).
    func takePulses() throws -> Int
}

/// A valve in memory, for tests and the demo: records every level set; `failing` makes the next sets throw.
public final class SimulatedValve: Valve, @unchecked Sendable {
    private let lock = NSLock()
    private var open = false
    private var levels: [Bool] = []
    private var failure: String?

    public init() {}

    public func set(open: Bool) async throws { try apply(open) }
    public func closeNow() throws { try apply(false) }

    private func apply(_ level: Bool) throws {
        try lock.withLock {
            if let failure { throw GPIOError(.ioctlFailed, call: "simulated", errno: nil, "the simulated valve fails: \(failure)") }
            open = level
            levels.append(level)
        }
    }

    public var isOpen: Bool { lock.withLock { open } }
    /// Every level set, oldest first.
    public var history: [Bool] { lock.withLock { levels } }
    /// Makes every following `set` throw (`nil`: work again).
    public func fail(_ reason: String?) { lock.withLock { failure = reason } }
}

/// A flow meter in memory: pulses are injected by a method call (the control API's "simulate flow").
public final class SimulatedFlowMeter: FlowMeter, @unchecked Sendable {
    private let lock = NSLock()
    private var pending = 0
    private var total = 0

    public init() {}

    /// Adds `count` pulses, as if water flowed.
    public func inject(_ count: Int) {
        lock.withLock {
            pending += max(0, count)
            total += max(0, count)
        }
    }

    public func takePulses() throws -> Int {
        lock.withLock {
            defer { pending = 0 }
            return pending
        }
    }

    /// Every pulse injected so far.
    public var totalPulses: Int { lock.withLock { total } }
}
