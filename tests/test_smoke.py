from core.fixes import Fix, FixBatch, datetime_to_us, iso_utc, us_to_datetime


def test_fixbatch_round_trip() -> None:
    fixes = [
        Fix(
            unit_id="u1",
            t_us=1_700_000_000_000_000,
            recv_us=1_700_000_000_500_000,
            lat=55.75,
            lon=37.62,
        ),
        Fix(
            unit_id="u2",
            t_us=1_700_000_001_250_000,
            recv_us=1_700_000_002_000_000,
            lat=-33.9,
            lon=151.2,
            speed_kmh=12.5,
            course=90.0,
            quality=1,
            sats=7,
            hdop=0.9,
            alt_m=10.0,
            talker="GN",
        ),
    ]
    batch = FixBatch.from_fixes(fixes)
    assert len(batch) == 2
    back = batch.to_fixes()
    assert [f.unit_id for f in back] == ["u1", "u2"]
    assert back[1].sats == 7
    assert back[1].talker == "GN"
    assert back[0] == fixes[0] or back[0].t_us == fixes[0].t_us  # NaN fields compare unequal
    assert iso_utc(fixes[1].t_us) == "2023-11-14T22:13:21.250Z"
    assert datetime_to_us(us_to_datetime(fixes[0].t_us)) == fixes[0].t_us
