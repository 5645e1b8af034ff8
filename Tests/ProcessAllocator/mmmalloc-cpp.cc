// SPDX-License-Identifier: Apache-2.0
// C++ new/delete reach the process allocator through libstdc++'s operator new:
// containers, strings, new[] and threads give the same output under glibc and libmmmalloc.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include <thread>
int main() {
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 50000; i++) m["key" + std::to_string(i % 5000)].push_back(i);
    std::vector<std::unique_ptr<int[]>> arrays;
    for (int i = 0; i < 1000; i++) arrays.emplace_back(new int[i + 1]);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) threads.emplace_back([] { std::vector<std::string> v; for (int i = 0; i < 20000; i++) v.push_back(std::string(i % 200, 'x')); });
    for (auto &t : threads) t.join();
    size_t total = 0; for (auto &kv : m) total += kv.second.size();
    std::printf("%zu %zu\n", m.size(), total);
}
