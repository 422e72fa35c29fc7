import pytest
from composer.core import Time, TimeUnit

from foundry_ext.schedulers.time_spec import check_same_unit, parse_time


@pytest.mark.parametrize('value,expected', [('100ba', Time(100, TimeUnit.BATCH)), ('2048tok', Time(2048, TimeUnit.TOKEN)),
                                            ('64sp', Time(64, TimeUnit.SAMPLE)), ('2ep', Time(2, TimeUnit.EPOCH)),
                                            (Time(5, TimeUnit.BATCH), Time(5, TimeUnit.BATCH))])
def test_parse_absolute_times(value, expected):
    assert parse_time(value, 'scheduler.t_warmup') == expected


@pytest.mark.parametrize('value,fragment', [
    ('0.2dur', "'dur' unit is a fraction of max_duration"),
    ('10sec', 'cannot drive a schedule'),
    (100, 'has no unit'),
    (0.5, 'has no unit'),
    ('-5ba', 'must be >= 0'),
    ('ten', 'is not a time string'),
    ('0.5ep', 'must be a whole number of its unit'),
    ('1.5ba', 'must be a whole number of its unit'),
])
def test_parse_refuses_with_key_value_and_fix(value, fragment):
    with pytest.raises(ValueError) as err:
        parse_time(value, 'scheduler.t_decay')
    msg = str(err.value)
    assert fragment in msg and 'scheduler.t_decay' in msg and repr(value) in msg


def test_zero_refused_where_it_makes_no_sense():
    assert parse_time('0ba', 'k').value == 0
    with pytest.raises(ValueError, match='must be > 0'):
        parse_time('0ba', 'scheduler.t_decay', allow_zero=False)


def test_units_must_be_comparable():
    ba, ep, tok = Time(1, TimeUnit.BATCH), Time(1, TimeUnit.EPOCH), Time(1, TimeUnit.TOKEN)
    assert check_same_unit({'a': ba, 'b': ep, 'c': None}) == TimeUnit.BATCH
    assert check_same_unit({'a': None}) is None
    with pytest.raises(ValueError, match='must share one unit.*a=1ba.*b=1tok'):
        check_same_unit({'a': ba, 'b': tok})
    # A zero length is zero in any unit: the defaults `0ba` must not clash with a schedule in tokens.
    assert check_same_unit({'t_warmup': Time(0, TimeUnit.BATCH), 't_decay': tok}) == TimeUnit.TOKEN


def test_parse_steps_takes_bare_batches_and_ba():
    from foundry_ext.schedulers.time_spec import parse_steps

    assert parse_steps('400', '--at') == [400]
    assert parse_steps('200ba, 400,600ba', '--at') == [200, 400, 600]


@pytest.mark.parametrize('value,message', [
    ('', 'names no step'),
    ('400tok', "'400tok' is in 'tok', but steps are batches"),
    ('2ep', "'2ep' is in 'ep', but steps are batches"),
    ('1.5', "'1.5' is not a whole number of batches"),
    ('-3', "'-3' is not a whole number of batches"),
    ('200,abc', "'abc' is not a whole number of batches"),
    ('200,200ba', 'names a step twice'),
])
def test_parse_steps_refuses_other_units_and_garbage_naming_the_option(value, message):
    from foundry_ext.core.errors import ConfigError
    from foundry_ext.schedulers.time_spec import parse_steps

    with pytest.raises(ConfigError, match=r'--at=.*' + message.replace('.', r'\.')):
        parse_steps(value, '--at')
