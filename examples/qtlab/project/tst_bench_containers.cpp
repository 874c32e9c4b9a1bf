// SPDX-License-Identifier: MIT OR Apache-2.0
// Container benchmarks of the lab example: sorting and hash lookups, each with data rows.

#include <QtTest/QtTest>
#include <QHash>
#include <QList>
#include <algorithm>

class tst_BenchContainers : public QObject
{
    Q_OBJECT

private slots:
    void initTestCase();
    void sortInts_data();
    void sortInts();
    void hashLookup_data();
    void hashLookup();
};

void tst_BenchContainers::initTestCase()
{
    // The same hash seed in every run: QHash's per-process random seed moves
    // hashLookup's collisions, and with them its cost, from run to run.
    QHashSeed::setDeterministicGlobalSeed();
}

void tst_BenchContainers::sortInts_data()
{
    QTest::addColumn<int>("size");
    QTest::newRow("small") << 64;
    QTest::newRow("large") << 4096;
}

void tst_BenchContainers::sortInts()
{
    QFETCH(int, size);
    QList<int> data(size);
    QBENCHMARK {
        for (int i = 0; i < size; ++i)
            data[i] = (i * 7919) % size;
        std::sort(data.begin(), data.end());
    }
    QVERIFY(std::is_sorted(data.cbegin(), data.cend()));
}

void tst_BenchContainers::hashLookup_data()
{
    QTest::addColumn<int>("size");
    QTest::newRow("100") << 100;
    QTest::newRow("10000") << 10000;
}

void tst_BenchContainers::hashLookup()
{
    QFETCH(int, size);
    QHash<int, int> hash;
    for (int i = 0; i < size; ++i)
        hash.insert(i * 31, i);
    int found = 0;
    QBENCHMARK {
        found = 0;
        for (int i = 0; i < 256; ++i)
            found += hash.value((i % size) * 31, -1) >= 0 ? 1 : 0;
    }
    QCOMPARE(found, 256);
}

QTEST_GUILESS_MAIN(tst_BenchContainers)
#include "tst_bench_containers.moc"
