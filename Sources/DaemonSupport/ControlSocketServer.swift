import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's control API on a Unix stream socket (e.g. /run/onecard/cardd.sock).
///
/// Protocol: newline-delimited JSON. Each request line is an object with a `"command"` string (`ControlRequest`); the
/// handler answers it with a stream of lines, one JSON value each, and the stream's end ends the answer. A request can
/// open an event stream that lasts until the client goes away or the server stops: the handler's `AsyncStream` is then
/// cancelled (its `onTermination` runs). Requests on one connection are answered in order, one stream at a time.
/// A line that is not JSON, not an object or has no command is answered `{"error": {"code": ..., "message": ...}}`
/// (codes in `ControlErrorCode`) and the connection stays open; the handler answers unknown commands the same way.
///
/// Bounds: a line longer than `maximumLineLength` is answered `line-too-long` and the connection closed; a connection
/// with no answer under way and no complete request line for `idleTimeout` is answered `idle-timeout` and closed; at
/// most `maximumClients` connections (more are answered `busy` and closed); at most `maximumQueuedBytes` of answers
/// waiting for a client that does not read (then `slow-client` and closed). A client half-closing its end (`nc -N`) gets
/// its pending answers, then the connection closes; a client closing fully cancels its stream at once.
///
/// Threads: a listener thread and one thread per connection block in poll(2) on their sockets (never on the cooperative
/// pool); the handler runs as a Task and its lines reach the connection thread through a queue and a wake-up pipe.
///
/// The socket file: an existing socket at the path that no process answers (a crashed daemon's) is replaced; one that
/// answers makes `start()` throw `.inUse`; anything else at the path is left alone (`.notASocket`). The file gets
/// `mode` and `group` before `listen`, so no client can connect through looser permissions. `stop()` stops accepting,
/// cancels the handlers, waits for them and the threads, and removes the file (if it is still the one it created).
public final class ControlSocketServer: @unchecked Sendable {
    /// Answers one request: the lines to send, in order; finishing the stream ends the answer.
    public typealias Handler = @Sendable (ControlRequest) async -> AsyncStream<ControlResponseLine>

    public struct Configuration: Sendable {
        /// The socket's path.
        public var path: String
        /// The socket file's mode (connecting needs write permission).
        public var mode: mode_t = 0o660
        /// The socket file's group, by name (nil: the process's group). The process must be root or a member.
        public var group: String?
        /// The longest request line, newline excluded.
        public var maximumLineLength = 64 * 1024
        /// How long a connection may wait without an answer under way before its next complete request line.
        public var idleTimeout: Duration = .seconds(300)
        /// Connections served at once.
        public var maximumClients = 32
        /// Answer bytes queued for one client before it is dropped as not reading.
        public var maximumQueuedBytes = 4 * 1024 * 1024
        /// At `stop()`, how long a connection may take to send what is queued for it.
        public var stopFlushTimeout: Duration = .milliseconds(500)

        public init(path: String, mode: mode_t = 0o660, group: String? = nil) {
            self.path = path
            self.mode = mode
            self.group = group
        }

        /// What `start()` would refuse in the configuration itself, checked without touching anything: a path
        /// `sockaddr_un` cannot hold, a group that does not exist.
        public func check() throws(ControlSocketError) {
            _ = try UnixSocket.withAddress(path) { _, _ in () }
            if let group { _ = try ControlSocketServer.groupID(named: group) }
        }

        /// Whether a `start()` failure is the configuration's (a restart cannot cure it) rather than the moment's (a
        /// daemon already answering there).
        public static func isConfigurationProblem(_ error: ControlSocketError) -> Bool {
            switch error.code {
            case .pathTooLong, .unknownGroup, .notASocket: true
            case .systemCall: [ENOENT, ENOTDIR, EACCES, EPERM, EROFS].contains(error.errno ?? 0)
            default: false
            }
        }
    }

    public let configuration: Configuration
    let handler: Handler
    let logger: Logger

    private enum Phase { case idle, running, stopping, stopped }
    private let lock = NSLock()
    private var phase = Phase.idle
    private var listenFD: Int32 = -1
    private var stopSignal: WakePipe?
    private var socketIdentity: (device: UInt64, inode: UInt64)?
    private var connectionCount = 0
    private var tasks: [UInt64: Task<Void, Never>] = [:]
    private var nextTaskID: UInt64 = 0
    private var stopRequestedWaiters: [CheckedContinuation<Void, Never>] = []
    private var stoppedWaiters: [CheckedContinuation<Void, Never>] = []
    private var stopRequested = false
    private let threads = DispatchGroup()

    /// A started server is kept alive by its threads until `stop()`: dropping the last reference does not stop it.
    public init(configuration: Configuration, logger: Logger, handler: @escaping Handler) {
        self.configuration = configuration
        self.logger = logger
        self.handler = handler
    }

    /// The number of connections being served now.
    public var activeConnections: Int { lock.withLock { connectionCount } }

    /// Binds the socket, sets its mode and group, and starts accepting on a thread of its own.
    /// - Throws: `ControlSocketError` (`.inUse`, `.notASocket`, `.unknownGroup`, `.pathTooLong`, `.systemCall`).
    public func start() throws(ControlSocketError) {
        let claimed = lock.withLock {
            guard phase == .idle else { return false }
            phase = .running  // claimed; reset below on failure
            return true
        }
        guard claimed else {
            throw ControlSocketError(.systemCall, "the control server at \(configuration.path) was started already: create a new one")
        }
        do {
            try bindAndListen()
        } catch {
            lock.withLock { phase = .idle }
            throw error
        }
        threads.enter()
        let thread = Thread { [self] in
            acceptLoop()
            threads.leave()
        }
        thread.name = "control-accept"
        thread.start()
        logger.info("control socket listening", metadata: ["control.path": "\(configuration.path)"])
    }

    private func bindAndListen() throws(ControlSocketError) {
        let path = configuration.path
        _ = try UnixSocket.withAddress(path) { _, _ in () }  // the length check, before touching the file
        var gid: gid_t?
        if let name = configuration.group { gid = try Self.groupID(named: name) }
        try removeStaleSocket(at: path)
        let fd = try UnixSocket.stream()
        func fail(_ error: ControlSocketError, unlinking: Bool) -> ControlSocketError {
            close(fd)
            if unlinking { unlink(path) }
            return error
        }
        guard try UnixSocket.withAddress(path, { bind(fd, $0, $1) }) == 0 else {
            let code = errno
            if code == EADDRINUSE {
                throw fail(ControlSocketError(.inUse, "\(path) appeared while binding: another daemon is starting; stop it first", errno: code), unlinking: false)
            }
            throw fail(UnixSocket.failure("bind(\(path))", "check the directory exists and is writable (RuntimeDirectory=)", errno: code), unlinking: false)
        }
        guard chmod(path, configuration.mode) == 0 else {
            throw fail(UnixSocket.failure("chmod(\(path), \(String(configuration.mode, radix: 8)))", "check the file system is writable"), unlinking: true)
        }
        if let gid, chown(path, uid_t.max, gid) != 0 {
            throw fail(UnixSocket.failure("chown(\(path), group \(configuration.group ?? ""))",
                                          "run as root or as a member of the group (SupplementaryGroups=)"), unlinking: true)
        }
        guard listen(fd, 64) == 0 else {
            throw fail(UnixSocket.failure("listen(\(path))", "check the process's limits"), unlinking: true)
        }
        var info = stat()
        let identity = stat(path, &info) == 0 ? (UInt64(info.st_dev), UInt64(info.st_ino)) : nil
        let signal: WakePipe
        do { signal = try WakePipe() } catch { throw fail(error, unlinking: true) }
        lock.withLock {
            listenFD = fd
            stopSignal = signal
            socketIdentity = identity
        }
    }

    /// Removes a socket file no process answers on; refuses a live one and anything not a socket.
    private func removeStaleSocket(at path: String) throws(ControlSocketError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }  // nothing there
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw ControlSocketError(.notASocket, "\(path) exists and is not a socket: move it away (it is left alone)")
        }
        if UnixSocket.isAnswering(path) {
            throw ControlSocketError(.inUse, "another process answers on \(path): a daemon is running already; stop it first (systemctl stop cardd)")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw UnixSocket.failure("unlink(\(path)) of a stale socket", "remove it by hand")
        }
        logger.notice("replaced a stale control socket", metadata: ["control.path": "\(path)"])
    }

    static func groupID(named name: String) throws(ControlSocketError) -> gid_t {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16 * 1024)
        let status = getgrnam_r(name, &entry, &buffer, buffer.count, &result)
        guard status == 0 else {
            throw UnixSocket.failure("getgrnam_r(\(name))", "check /etc/group and NSS", errno: status)
        }
        guard result != nil else {
            throw ControlSocketError(.unknownGroup, "the group \(name) for the control socket does not exist: create it (systemd-sysusers, onecard.sysusers) or choose another")
        }
        return entry.gr_gid
    }

    // MARK: Accepting

    private func acceptLoop() {
        let (listener, signal) = lock.withLock { (listenFD, stopSignal!) }
        while true {
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: signal.readEnd, events: Int16(POLLIN), revents: 0)]
            guard UnixSocket.poll(&fds, timeout: nil) >= 0 else {
                logger.error("control socket poll failed; no more clients are accepted", metadata: ["error": "\(String(cString: strerror(errno)))"])
                return
            }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            let client = Glibc.accept(listener, nil, nil)
            if client >= 0 {
                // Glibc's module does not export accept4: the same flags, set after (the daemon does not fork).
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
            }
            if client < 0 {
                // ECONNABORTED, EINTR: the next poll tells. EMFILE and the like: wait a little rather than spin.
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                    logger.warning("cannot accept a control client", metadata: ["error": "\(String(cString: strerror(errno)))"])
                    usleep(100_000)
                }
                continue
            }
            let admitted = lock.withLock {
                guard connectionCount < configuration.maximumClients else { return false }
                connectionCount += 1
                return true
            }
            guard admitted else {
                let line = ControlResponseLine.error(.busy, "\(configuration.maximumClients) clients are connected already: retry when one has finished")
                _ = UnixSocket.sendAvailable(client, ArraySlice(Array(line.json) + [0x0A]))
                close(client)
                continue
            }
            let connection: Connection
            do {
                connection = try Connection(fd: client, server: self, stopSignal: signal)
            } catch {
                logger.warning("cannot serve a control client", metadata: ["error": "\(error)"])
                close(client)
                lock.withLock { connectionCount -= 1 }
                continue
            }
            threads.enter()
            let thread = Thread { [self] in
                connection.run()
                lock.withLock { connectionCount -= 1 }
                threads.leave()
            }
            thread.name = "control-client"
            thread.start()
        }
    }

    /// Starts the handler for one request as a Task; `deliver` gets each line (false: stop consuming), then `done`.
    func startHandler(_ request: ControlRequest, deliver: @escaping @Sendable (ControlResponseLine) -> Bool,
                      done: @escaping @Sendable () -> Void) -> Task<Void, Never>? {
        lock.withLock {
            guard phase == .running else { return nil }
            let id = nextTaskID
            nextTaskID += 1
            let handler = handler
            let task = Task { [self] in
                let lines = await handler(request)
                for await line in lines {
                    guard deliver(line) else { break }
                }
                done()
                _ = lock.withLock { tasks.removeValue(forKey: id) }
            }
            tasks[id] = task
            return task
        }
    }

    // MARK: Stopping

    /// Asks the server to stop without waiting (safe from any thread, e.g. a signal handler's task); `stop()` or
    /// `run()` then finishes the job.
    public func requestStop() {
        let (signal, waiters) = lock.withLock { () -> (WakePipe?, [CheckedContinuation<Void, Never>]) in
            stopRequested = true
            let waiters = stopRequestedWaiters
            stopRequestedWaiters = []
            return (phase == .running ? stopSignal : nil, waiters)
        }
        signal?.signal()
        for waiter in waiters { waiter.resume() }
    }

    /// Stops accepting, cancels the handlers, waits for them and every connection thread, closes the socket and removes
    /// its file (unless another process replaced it). Idempotent; concurrent calls all return when it is done.
    /// Not from inside a handler (it would wait for itself): a `shutdown` command calls `requestStop()`.
    public func stop() async {
        requestStop()
        let mine = lock.withLock { () -> Bool? in
            switch phase {
            case .idle: phase = .stopped; return nil
            case .running: phase = .stopping; return true
            case .stopping: return false
            case .stopped: return nil
            }
        }
        guard let mine else { return }
        guard mine else {
            await withCheckedContinuation { continuation in
                let done = lock.withLock {
                    if phase == .stopped { return true }
                    stoppedWaiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
            return
        }
        // The threads end on the stop signal (each connection cancels its Task first).
        await withCheckedContinuation { continuation in threads.notify(queue: .global()) { continuation.resume() } }
        let running = lock.withLock { Array(tasks.values) }
        for task in running {
            task.cancel()
            await task.value
        }
        let (fd, identity) = lock.withLock { (listenFD, socketIdentity) }
        close(fd)
        var info = stat()
        if let identity, stat(configuration.path, &info) == 0, UInt64(info.st_dev) == identity.device, UInt64(info.st_ino) == identity.inode {
            unlink(configuration.path)
        }
        let waiters = lock.withLock {
            phase = .stopped
            listenFD = -1
            stopSignal = nil
            let waiters = stoppedWaiters
            stoppedWaiters = []
            return waiters
        }
        for waiter in waiters { waiter.resume() }
        logger.info("control socket closed", metadata: ["control.path": "\(configuration.path)"])
    }

    /// Starts (if not started) and serves until the task is cancelled or `requestStop()`/`stop()` is called, then
    /// stops. For swift-service-lifecycle, call `requestStop()` from `onGracefulShutdown`.
    public func run() async throws(ControlSocketError) {
        if lock.withLock({ phase == .idle }) { try start() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let requested = lock.withLock {
                    if stopRequested { return true }
                    stopRequestedWaiters.append(continuation)
                    return false
                }
                if requested { continuation.resume() }
            }
        } onCancel: {
            requestStop()
        }
        await stop()
    }
}

/// One client: its thread reads requests, writes the answers its handler Tasks queue, and watches for the client
/// leaving, the idle time and the server stopping.
private final class Connection: @unchecked Sendable {
    let fd: Int32
    let server: ControlSocketServer
    let stopSignal: WakePipe
    let wake: WakePipe
    let configuration: ControlSocketServer.Configuration

    // Shared with the handler Task, under `lock`.
    private let lock = NSLock()
    private var outbox: [UInt8] = []
    private var queuedBytes = 0
    private var overflowed = false
    private var handlerFinished = false
    private var closed = false

    // The thread's own.
    private var input: [UInt8] = []
    private var output: [UInt8] = []
    private var pending: [Result<ControlRequest, ControlErrorBody>] = []
    private var active: Task<Void, Never>?
    private var readClosed = false
    private var closing: ContinuousClock.Instant?  // set: send what is queued until then, then close
    private var idleSince = ContinuousClock.now

    init(fd: Int32, server: ControlSocketServer, stopSignal: WakePipe) throws(ControlSocketError) {
        self.fd = fd
        self.server = server
        self.stopSignal = stopSignal
        configuration = server.configuration
        wake = try WakePipe()
    }

    func run() {
        defer {
            active?.cancel()
            lock.withLock { closed = true }
            close(fd)
        }
        var stopping = false
        while true {
            collectAnswers()
            startNextRequest(stopping: stopping)
            if let closing, output.isEmpty || ContinuousClock.now >= closing { return }
            if readClosed && active == nil && pending.isEmpty && output.isEmpty { return }
            if closing == nil && active == nil && pending.isEmpty && ContinuousClock.now - idleSince >= configuration.idleTimeout {
                closeWith(.idleTimeout, "no request for \(configuration.idleTimeout): the connection is closed; reconnect to send more")
                continue
            }

            var events = Int16(0)
            if !readClosed && closing == nil { events |= Int16(POLLIN) }
            if !output.isEmpty { events |= Int16(POLLOUT) }
            var fds = [pollfd(fd: fd, events: events, revents: 0), pollfd(fd: wake.readEnd, events: Int16(POLLIN), revents: 0)]
            if !stopping { fds.append(pollfd(fd: stopSignal.readEnd, events: Int16(POLLIN), revents: 0)) }
            let now = ContinuousClock.now
            var timeout: Duration?
            if let closing { timeout = closing - now }
            else if active == nil && pending.isEmpty { timeout = idleSince + configuration.idleTimeout - now }
            guard UnixSocket.poll(&fds, timeout: timeout) >= 0 else { return }

            if !stopping && fds[2].revents != 0 {
                stopping = true
                active?.cancel()
                pending.removeAll()
                if closing == nil { closing = ContinuousClock.now + configuration.stopFlushTimeout }
            }
            if fds[1].revents != 0 { wake.drain() }
            let revents = fds[0].revents
            // POLLHUP: the client closed both directions; nobody reads what we would send.
            if revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { return }
            if revents & Int16(POLLIN) != 0 && !readRequests() { return }
            if revents & Int16(POLLOUT) != 0 {
                guard let sent = UnixSocket.sendAvailable(fd, output[...]) else { return }
                output.removeFirst(sent)
                lock.withLock { queuedBytes -= sent }
            }
        }
    }

    /// Moves the Task's lines into `output`, notes a finished handler, reacts to an overflow.
    private func collectAnswers() {
        let (lines, finished, overflow) = lock.withLock {
            let lines = outbox
            outbox = []
            let finished = handlerFinished
            handlerFinished = false
            return (lines, finished, overflowed)
        }
        output += lines
        if finished {
            active = nil
            idleSince = .now
        }
        if overflow && closing == nil {
            active?.cancel()
            closeWith(.slowClient, "more than \(configuration.maximumQueuedBytes) bytes of answers were not read: the connection is closed")
        }
    }

    /// Starts the next request's handler, or answers the next bad line, while none runs.
    private func startNextRequest(stopping: Bool) {
        while active == nil && closing == nil && !stopping && !pending.isEmpty {
            switch pending.removeFirst() {
            case .failure(let error):
                enqueueDirect(ControlResponseLine(error: error))
            case .success(let request):
                active = server.startHandler(request, deliver: { [self] line in deliver(line) }, done: { [self] in
                    lock.withLock { handlerFinished = true }
                    wake.signal()
                })
                if active == nil { return }  // the server is stopping
            }
        }
    }

    /// Reads what the client sent and splits it into requests. Returns false when the connection must end now.
    private func readRequests() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let count = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
        if count < 0 { return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK }
        if count == 0 {
            readClosed = true
            return true
        }
        var start = input.count
        input += chunk[0..<count]
        while let newline = input[start...].firstIndex(of: 0x0A) {
            var line = input[0..<newline]
            if line.last == 0x0D { line = line.dropLast() }  // tolerate CRLF (telnet, some nc)
            let tooLong = line.count > configuration.maximumLineLength
            input.removeFirst(newline + 1)
            start = 0
            if tooLong {
                tooLongLine()
                return true
            }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }  // blank lines are ignored
            idleSince = .now
            do {
                pending.append(.success(try ControlRequest(line: Data(line))))
            } catch {
                pending.append(.failure(error))
            }
        }
        if input.count > configuration.maximumLineLength { tooLongLine() }
        return true
    }

    private func tooLongLine() {
        input = []
        pending.removeAll()
        active?.cancel()
        closeWith(.lineTooLong, "a request line is longer than \(configuration.maximumLineLength) bytes: the connection is closed; send one JSON object per line")
    }

    /// Queues an error line after what is queued and closes the connection once it is sent (or the flush time is up).
    private func closeWith(_ code: ControlErrorCode, _ message: String) {
        server.logger.notice("closing a control connection", metadata: ["control.error": "\(code)"])
        enqueueDirect(.error(code, message))
        closing = ContinuousClock.now + configuration.stopFlushTimeout
    }

    private func enqueueDirect(_ line: ControlResponseLine) {
        let bytes = Array(line.json) + [0x0A]
        output += bytes
        lock.withLock { queuedBytes += bytes.count }
    }

    /// Called by the handler Task for each line: false when the connection is gone or over its queue bound.
    private func deliver(_ line: ControlResponseLine) -> Bool {
        let bytes = Array(line.json) + [0x0A]
        let accepted = lock.withLock {
            guard !closed && !overflowed else { return false }
            guard queuedBytes + bytes.count <= configuration.maximumQueuedBytes else {
                overflowed = true
                return false
            }
            outbox += bytes
            queuedBytes += bytes.count
            return true
        }
        wake.signal()
        return accepted
    }
}
