// SPDX-License-Identifier: MIT OR Apache-2.0
// String benchmarks of the lab example: joining and formatting, each with data rows.

#include <QtTest/QtTest>
#include <QString>
#include <QStringList>

class tst_BenchStrings : public QObject
{
    Q_OBJECT

private slots:
    void join_data();
    void join();
    void number_data();
    void number();
};

void tst_BenchStrings::join_data()
{
    QTest::addColumn<int>("count");
    QTest::newRow("10") << 10;
    QTest::newRow("100") << 100;
    QTest::newRow("1000") << 1000;
}

void tst_BenchStrings::join()
{
    QFETCH(int, count);
    QStringList parts;
    for (int i = 0; i < count; ++i)
        parts << QString::number(i);
    QString joined;
    QBENCHMARK {
        joined = parts.join(QLatin1Char(','));
    }
    QVERIFY(joined.size() > count);
}

void tst_BenchStrings::number_data()
{
    QTest::addColumn<bool>("floating");
    QTest::newRow("int") << false;
    QTest::newRow("double") << true;
}

void tst_BenchStrings::number()
{
    QFETCH(bool, floating);
    qsizetype total = 0;
    QBENCHMARK {
        total = 0;
        for (int i = 0; i < 100; ++i)
            total += floating ? QString::number(i * 1.25, 'g', 6).size() : QString::number(i * 7919).size();
    }
    QVERIFY(total > 0);
}

QTEST_GUILESS_MAIN(tst_BenchStrings)
#include "tst_bench_strings.moc"
