extension Dictionary where Value == Int {
    /// One fewer for `key`; the entry goes at zero, so a map of counts holds only what is open.
    mutating func decrementCount(_ key: Key) {
        let left = self[key, default: 1] - 1
        self[key] = left > 0 ? left : nil
    }
}
