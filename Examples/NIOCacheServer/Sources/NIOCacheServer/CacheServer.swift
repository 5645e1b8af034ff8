// SPDX-License-Identifier: Apache-2.0
import MM
import MMNIO
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// An HTTP server that answers `GET /item/<n>` with a `responseBytes`-long
/// body computed from `n`, keeps the answers in a `ResponseCache` (a
/// shrinker) and allocates its NIO buffers from swift-mm
/// (`ByteBufferAllocator.memorySystem`): under pressure the cache sheds,
/// and no request fails.
public final class CacheServer: Sendable {
    public let cache: ResponseCache
    public let responseBytes: Int
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let registration: ShrinkerRegistration
    /// Requests answered, and requests answered with an error status.
    public let counters = ServerCounters()

    /// The port the server listens on (loopback).
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Starts a server on `127.0.0.1:port` (0: any free port) whose cache
    /// lives in `system` (its NIO buffers in `MemorySystem.shared`).
    public init(system: MemorySystem, port: Int = 0, responseBytes: Int = 64 << 10, threads: Int = 1) throws {
        let cache = ResponseCache(system: system)
        self.cache = cache
        self.responseBytes = responseBytes
        registration = system.registerShrinker(cache)
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let counters = self.counters
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.allocator, value: .memorySystem)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(ItemHandler(cache: cache, responseBytes: responseBytes, counters: counters))
                }
            }
        do {
            channel = try bootstrap.bind(host: "127.0.0.1", port: port).wait()
        } catch {
            registration.unregister()
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// Stops listening, closes the connections and frees the cache.
    public func shutdown() throws {
        try channel.close().wait()
        try group.syncShutdownGracefully()
        registration.unregister()
        cache.removeAll()
    }

    /// The body of item `n`: `responseBytes` bytes, byte `i` = `(n + i) & 0xff`.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer, item n: Int) {
        // The pattern repeats every 256 bytes: write one period, then copy it.
        let period = Swift.min(256, buffer.count)
        for i in 0..<period { buffer[i] = UInt8(truncatingIfNeeded: n &+ i) }
        var done = period
        while done < buffer.count {
            let chunk = Swift.min(done, buffer.count - done)
            (buffer.baseAddress! + done).copyMemory(from: buffer.baseAddress!, byteCount: chunk)
            done += chunk
        }
    }
}

/// What the server has answered.
public final class ServerCounters: Sendable {
    /// Requests answered with 200.
    public let served = Atomic<Int>(0)
    /// Requests answered with anything else.
    public let failed = Atomic<Int>(0)
}

/// One connection's handler: parses `/item/<n>`, answers from the cache or computes and caches.
private final class ItemHandler: ChannelInboundHandler, @unchecked Sendable {  // used on its event loop only
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let cache: ResponseCache
    let responseBytes: Int
    let counters: ServerCounters
    var head: HTTPRequestHead?

    init(cache: ResponseCache, responseBytes: Int, counters: ServerCounters) {
        self.cache = cache
        self.responseBytes = responseBytes
        self.counters = counters
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context, head)
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let parts = head.uri.split(separator: "/")
        guard parts.count == 2, parts[0] == "item", let n = Int(parts[1]) else {
            write(context, head, status: .notFound, body: context.channel.allocator.buffer(string: "not found\n"))
            return
        }
        var body = context.channel.allocator.buffer(capacity: responseBytes)
        let hit = cache.withEntry(n) { bytes in body.writeBytes(bytes) } != nil
        if !hit {
            body.writeWithUnsafeMutableBytes(minimumWritableBytes: responseBytes) { out in
                CacheServer.fill(UnsafeMutableRawBufferPointer(rebasing: out[0..<responseBytes]), item: n)
                return responseBytes
            }
            body.withUnsafeReadableBytes { cache.insert(n, $0) }
        }
        write(context, head, status: .ok, body: body)
    }

    private func write(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, status: HTTPResponseStatus, body: ByteBuffer) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Connection", value: request.isKeepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if status == .ok {
            counters.served.wrappingAdd(1, ordering: .relaxed)
        } else {
            counters.failed.wrappingAdd(1, ordering: .relaxed)
        }
        let channel = context.channel
        let keepAlive = request.isKeepAlive
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
