import Foundation

/// When the uplink tries next: after a success, at the regular interval (or at once when asked); after a failure,
/// an exponential backoff with jitter (so a campus of terminals coming back online does not knock in step), capped.
/// A value: the uplink feeds it outcomes and a random number, and sleeps for what it answers.
public struct UplinkSchedule: Sendable, Hashable {
    public var interval: Duration
    public var firstBackoff: Duration
    public var maxBackoff: Duration
    /// Failures in a row since the last success.
    public private(set) var failures = 0

    public init(interval: Duration = .seconds(30), firstBackoff: Duration = .seconds(1), maxBackoff: Duration = .seconds(300)) {
        self.interval = interval
        self.firstBackoff = firstBackoff
        self.maxBackoff = maxBackoff
    }

    /// A pass succeeded: the next one after `interval`.
    public mutating func succeeded() -> Duration {
        failures = 0
        return interval
    }

    /// A pass failed: `jitter` in 0...1 picks the wait in [½, 1] × min(maxBackoff, firstBackoff × 2^(failures−1)).
    public mutating func failed(jitter: Double) -> Duration {
        failures += 1
        let doublings = min(failures - 1, 30)
        var ceiling = firstBackoff * (1 << doublings)
        if ceiling > maxBackoff || ceiling < firstBackoff { ceiling = maxBackoff }
        let fraction = 0.5 + 0.5 * min(1, max(0, jitter))
        return ceiling * fraction
    }
}
