// SPDX-License-Identifier: MIT OR Apache-2.0
// Codec benchmarks of the lab example: a checksum and zlib compression, measured in CPU
// ticks, and the compressed size, a second metric (bytes) reported with
// QTest::setBenchmarkResult.

#include <QtTest/QtTest>
#include <QByteArray>

namespace {

// The `-iterations N` QtTest was given (main() reads it), else 1.
int forcedIterations = 1;

// How many times checksum() mixes every byte in.
constexpr int kRounds = 10;

// FNV-1a over the data, kRounds times: one multiply per byte and round, each
// depending on the last, so the work grows exactly with kRounds.
quint32 checksum(const QByteArray &data)
{
    quint32 h = 2166136261u;
    for (int round = 0; round < kRounds; ++round) {
        for (const char c : data) {
            h ^= quint8(c);
            h *= 16777619u;
        }
    }
    return h;
}

// `size` bytes of text-like (repetitive) or noise-like (pseudo-random) data.
QByteArray sample(int size, bool text)
{
    QByteArray data(size, Qt::Uninitialized);
    quint32 x = 12345;
    static const char words[] = "the quick brown fox jumps over the lazy dog ";
    for (int i = 0; i < size; ++i) {
        x = x * 1103515245u + 12345u;
        data[i] = text ? words[i % (sizeof(words) - 1)] : char(x >> 24);
    }
    return data;
}

} // namespace

class tst_BenchCodec : public QObject
{
    Q_OBJECT

private slots:
    void checksum_data();
    void checksum();
    void compress_data();
    void compress();
    void compressedSize_data();
    void compressedSize();
};

void tst_BenchCodec::checksum_data()
{
    QTest::addColumn<int>("size");
    QTest::newRow("1KiB") << 1024;
    QTest::newRow("4KiB") << 4096;
}

void tst_BenchCodec::checksum()
{
    QFETCH(int, size);
    const QByteArray data = sample(size, false);
    quint32 sum = 0;
    QBENCHMARK {
        sum = ::checksum(data);
    }
    QVERIFY(sum != 0);
}

void tst_BenchCodec::compress_data()
{
    QTest::addColumn<bool>("text");
    QTest::newRow("text") << true;
    QTest::newRow("noise") << false;
}

void tst_BenchCodec::compress()
{
    QFETCH(bool, text);
    const QByteArray data = sample(4096, text);
    QByteArray packed;
    QBENCHMARK {
        packed = qCompress(data, 6);
    }
    QVERIFY(!packed.isEmpty());
}

void tst_BenchCodec::compressedSize_data()
{
    compress_data();
}

void tst_BenchCodec::compressedSize()
{
    QFETCH(bool, text);
    const QByteArray data = sample(4096, text);
    const QByteArray packed = qCompress(data, 6);
    QVERIFY(!packed.isEmpty());
    // A size, not a time: smaller is better, like an allocation. QtTest (6.4)
    // divides a result set here by `-iterations N`, so it is given N times over.
    QTest::setBenchmarkResult(qreal(packed.size()) * forcedIterations, QTest::BytesAllocated);
}

// QTEST_GUILESS_MAIN, plus reading `-iterations N` for compressedSize().
int main(int argc, char *argv[])
{
    QCoreApplication app(argc, argv);
    for (int i = 1; i + 1 < argc; ++i) {
        if (qstrcmp(argv[i], "-iterations") == 0)
            forcedIterations = qMax(1, QByteArray(argv[i + 1]).toInt());
    }
    tst_BenchCodec tc;
    QTEST_SET_MAIN_SOURCE_PATH
    return QTest::qExec(&tc, argc, argv);
}
#include "tst_bench_codec.moc"
