// SPDX-License-Identifier: Apache-2.0
// Usage: nio-cache-server [PORT] [BUDGET_MIB]
// An HTTP server on 127.0.0.1 whose whole budget (response cache and NIO
// buffers) is MemorySystem.shared's limit; `curl localhost:PORT/item/7`.
import Glibc
import MM
import NIOCacheServer

let arguments = CommandLine.arguments
let port = arguments.count > 1 ? Int(arguments[1]) ?? 8080 : 8080
let budget = (arguments.count > 2 ? Int(arguments[2]) ?? 64 : 64) << 20
var configuration = MemoryConfiguration.sized(for: .current())
configuration.limit = budget
let mm = try MemorySystem.configureShared(configuration)
let server = try CacheServer(system: mm, port: port)
print("listening on 127.0.0.1:\(server.port) with a budget of \(budget >> 20) MiB; GET /item/<n>")
while true {
    sleep(5)
    let s = mm.statistics()
    print("cache \(server.cache.count) entries (\(server.cache.bytes >> 10) kB), evicted \(server.cache.evictions.load(ordering: .relaxed)), free \(s.freeBytes >> 10) kB of \(s.limit >> 10) kB, served \(server.counters.served.load(ordering: .relaxed))")
}
