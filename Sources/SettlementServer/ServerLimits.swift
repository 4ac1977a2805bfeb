import Logging
import NIOConcurrencyHelpers
import NIOCore

/// What one settlementd holds for its callers at once. A caller that cannot sign costs at most a connection until the
/// idle timeout (its requests are refused before their bodies are read); a signed-looking request's body counts
/// against the budget from before it is read until its answer, and must arrive within `bodyDeadline`.
/// A buffering reverse proxy in front (nginx's default `proxy_request_buffering on`) keeps slow clients off it.
public struct ServerLimits: Sendable {
    /// Connections served at once; one more is closed at once (logged once until the count falls under the cap).
    public var maxConnections: Int
    /// A connection with no request in flight and nothing read for this long is closed. Longer than the clients'
    /// own idle time (async-http-client keeps a pooled connection 60 s), so a client never reuses one just closed.
    public var idleTimeout: TimeAmount
    /// Request body bytes held at once, summed over every request from its declared length (the largest body when it
    /// declares none) until it is answered; a request over the budget gets 503 `busy` before its body is read.
    public var bodyBudget: Int
    /// The share of the budget one caller (one key) may hold: a caller alone cannot take the whole budget.
    public var bodyBudgetPerCaller: Int
    /// A body not read whole this long after its head is a 408, and its share of the budget is given back.
    public var bodyDeadline: Duration

    public init(maxConnections: Int = 4096, idleTimeout: TimeAmount = .seconds(75),
                bodyBudget: Int = 32 * SettlementLimits.maxBodyBytes, bodyBudgetPerCaller: Int = 2 * SettlementLimits.maxBodyBytes,
                bodyDeadline: Duration = .seconds(30)) {
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        self.bodyBudget = bodyBudget
        self.bodyBudgetPerCaller = bodyBudgetPerCaller
        self.bodyDeadline = bodyDeadline
    }
}

/// A count shared by every connection (they run on several event loops).
final class SharedCount: Sendable {
    private let value = NIOLockedValueBox(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Adds `amount` when the sum stays within the limit.
    func take(_ amount: Int) -> Bool {
        value.withLockedValue { value in
            guard value + amount <= limit else { return false }
            value += amount
            return true
        }
    }

    func give(_ amount: Int) { value.withLockedValue { $0 -= amount } }

    var current: Int { value.withLockedValue { $0 } }
}

/// The request body bytes held, in all and per caller (`ServerLimits.bodyBudget`, `bodyBudgetPerCaller`).
final class BodyBudget: Sendable {
    private let held = NIOLockedValueBox((total: 0, byCaller: [String: Int]()))
    let limit: Int
    let perCaller: Int

    init(limit: Int, perCaller: Int) {
        self.limit = limit
        self.perCaller = perCaller
    }

    /// Takes `amount` for `caller` when both the total and the caller's share stay within their limits.
    func take(_ amount: Int, for caller: String) -> Bool {
        held.withLockedValue { held in
            let callers = held.byCaller[caller, default: 0]
            guard held.total + amount <= limit, callers + amount <= perCaller else { return false }
            held.total += amount
            held.byCaller[caller] = callers + amount
            return true
        }
    }

    func give(_ amount: Int, for caller: String) {
        held.withLockedValue { held in
            held.total -= amount
            let left = held.byCaller[caller, default: 0] - amount
            held.byCaller[caller] = left > 0 ? left : nil
        }
    }
}

/// Counts the connections of one server: a connection over the cap is closed before a byte of it is read.
final class ConnectionCap: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let open: SharedCount
    private let full: NIOLockedValueBox<Bool>
    private let logger: Logger
    private var admitted = false

    init(open: SharedCount, full: NIOLockedValueBox<Bool>, logger: Logger) {
        self.open = open
        self.full = full
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        admitted = open.take(1)
        if admitted {
            full.withLockedValue { $0 = false }
            return
        }
        if full.withLockedValue({ was in defer { was = true }; return !was }) {
            logger.warning("refusing connections: \(open.limit) are open (settlementd --max-connections); a caller holding idle ones is closed after the idle timeout")
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        leave()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        leave()
    }

    private func leave() {
        if admitted {
            admitted = false
            open.give(1)
        }
    }
}

