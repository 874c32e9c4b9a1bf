// SPDX-License-Identifier: MIT OR Apache-2.0
// A small QtTest benchmark owned by testfleet: the formats crate's integration test
// builds it against the system Qt 6, runs it with every QtTest logger and checks that
// the parsers agree on its results. `cargo xtask aa` and the slow group's comparison
// test run it many times for A/A and A/B comparisons.
//
// TF_BENCH_SLOWDOWN=<factor> (such as 1.3) makes every benchmarked body do that much
// more of the same work: each iteration owes (factor - 1) extra passes and pays them
// whole, so 1.3 is 3 extra passes every 10 iterations, deterministically. Unset, or
// not a number above 1, it changes nothing.

#include <QtTest/QtTest>
#include <QString>
#include <QStringList>

namespace {

double extraPassesPerIteration()
{
    static const double extra = [] {
        bool ok = false;
        const double factor = qEnvironmentVariable("TF_BENCH_SLOWDOWN").toDouble(&ok);
        return ok && factor > 1.0 && factor <= 100.0 ? factor - 1.0 : 0.0;
    }();
    return extra;
}

// Counts the passes of a benchmarked body: 1, plus the extra passes owed so far.
class Slowdown
{
public:
    int passes()
    {
        m_owed += extraPassesPerIteration();
        int n = 1;
        while (m_owed >= 1.0) {
            ++n;
            m_owed -= 1.0;
        }
        return n;
    }

private:
    double m_owed = 0.0;
};

} // namespace

class tst_Bench : public QObject
{
    Q_OBJECT

private slots:
    void join_data();
    void join();
    void sortNumbers_data();
    void sortNumbers();
    void hashLookup();
    void plainPass();
    void skipped();
    void expectedFailure();
};

void tst_Bench::join_data()
{
    QTest::addColumn<int>("count");
    QTest::newRow("ten") << 10;
    QTest::newRow("hundred") << 100;
    QTest::newRow("with space, comma=1") << 50;
}

void tst_Bench::join()
{
    QFETCH(int, count);
    QStringList parts;
    for (int i = 0; i < count; ++i)
        parts << QString::number(i);
    QString joined;
    Slowdown slowdown;
    QBENCHMARK {
        for (int pass = slowdown.passes(); pass > 0; --pass)
            joined = parts.join(QLatin1Char(','));
    }
    QVERIFY(!joined.isEmpty());
}

void tst_Bench::sortNumbers_data()
{
    QTest::addColumn<int>("size");
    QTest::newRow("small") << 64;
    QTest::newRow("large") << 4096;
}

void tst_Bench::sortNumbers()
{
    QFETCH(int, size);
    QList<int> data(size);
    Slowdown slowdown;
    QBENCHMARK {
        for (int pass = slowdown.passes(); pass > 0; --pass) {
            for (int i = 0; i < size; ++i)
                data[i] = (i * 7919) % size;
            std::sort(data.begin(), data.end());
        }
    }
    QCOMPARE(data.size(), size);
}

void tst_Bench::hashLookup()
{
    QHash<QString, int> hash;
    for (int i = 0; i < 1000; ++i)
        hash.insert(QString::number(i), i);
    // Assign, don't accumulate: QBENCHMARK may run millions of iterations on
    // a fast machine, and a sum of 500s overflowed int (undefined behaviour; the
    // check failed now and then).
    int found = 0;
    Slowdown slowdown;
    QBENCHMARK {
        for (int pass = slowdown.passes(); pass > 0; --pass)
            found = hash.value(QStringLiteral("500"));
    }
    QCOMPARE(found, 500);
}

void tst_Bench::plainPass()
{
    qDebug("a debug message");
    QVERIFY(true);
}

void tst_Bench::skipped()
{
    QSKIP("nothing to see here");
}

void tst_Bench::expectedFailure()
{
    QEXPECT_FAIL("", "known to fail", Continue);
    QCOMPARE(1, 2);
}

QTEST_MAIN(tst_Bench)
#include "tst_bench.moc"
