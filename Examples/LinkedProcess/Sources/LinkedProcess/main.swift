// SPDX-License-Identifier: Apache-2.0
// Arrays, strings and class instances of this program come from swift-mm:
// it prints how many objects the kmalloc caches hold, and exits non-zero if
// the process's allocations did not reach swift-mm.
import Glibc
import MMMalloc

final class Node {
    var next: Node?
    let payload: [Int]
    init(next: Node?, payload: [Int]) { self.next = next; self.payload = payload }
}

var head: Node?
for i in 0..<10_000 { head = Node(next: head, payload: Array(repeating: i, count: i % 64)) }
var words: [String] = []
for i in 0..<10_000 { words.append("word \(i) " + String(repeating: "x", count: i % 100)) }

guard let mm = MemorySystem.process else {
    print("MemorySystem.process is nil: malloc is not served by swift-mm")
    exit(1)
}
let stats = mm.statistics()
let live = stats.slabCaches.filter { $0.name.hasPrefix("kmalloc-") }.reduce(0) { $0 + $1.activeObjects }
print("swift-mm serves this process: \(live > 20_000 ? "yes" : "no") (\(live / 1000)k live kmalloc objects, \(words.count) strings)")
exit(live > 20_000 ? 0 : 1)
